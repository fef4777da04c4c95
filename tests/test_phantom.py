"""The synthetic CT phantom: DeepLesion format, labels, sentences, determinism, and the
whole path phantom -> DeepLesion reader -> patch cache."""

from __future__ import annotations

import filecmp
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vision.data.cache import BuildInterrupted, PatchCache, build_cache
from vision.data.deeplesion import read_dl_info, read_hand_labeled, read_label_split, read_slice_hu
from vision.data.phantom import synthesize
from vision.data.preprocess import lesion_patch

N_LESIONS = 40


@pytest.fixture(scope="session")
def phantom(tmp_path_factory, shipped_ontology) -> Path:
    return synthesize(tmp_path_factory.mktemp("phantom") / "ds", N_LESIONS, seed=3, workers=1, onto=shipped_ontology)


@pytest.fixture(scope="session")
def cache(phantom, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "c"
    report = build_cache(phantom, phantom / "labels.json", out, workers=1, progress=False)
    assert report.n_lesions == N_LESIONS and not report.bad
    return out


def _tree_equal(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files_a], shallow=False)
    assert not mismatch and not errors, mismatch[:5]


def test_phantom_is_deepLesion_format(phantom):
    info = read_dl_info(phantom / "DL_info.csv")
    assert len(info) == N_LESIONS and not info.errors
    for lesion in info.lesions.values():
        image = read_slice_hu(lesion.slice_path(phantom / "Images_png", lesion.key_slice))
        assert image.shape == lesion.image_size == (256, 256)
        assert -1100 <= image.min() and image.max() < 3000  # HU after the 32768 offset
        lo, hi = lesion.slice_range
        for n in range(lo, hi + 1):  # the slices the ± 2 mm channels need exist
            assert lesion.slice_path(phantom / "Images_png", n).exists()
        x1, y1, x2, y2 = lesion.box
        assert 0 <= x1 < x2 <= 255 and 0 <= y1 < y2 <= 255
        assert 1.0 <= lesion.spacing_mm[2] <= 5.0 and 300 <= 256 * lesion.spacing_mm[0] <= 520
    per_slice = Counter((l.series_dir, l.key_slice) for l in info.lesions.values())
    assert set(per_slice.values()) <= {1, 2, 3}


def test_splits_are_by_patient_and_agree_with_the_label_json(phantom):
    info = read_dl_info(phantom / "DL_info.csv")
    splits = read_label_split(phantom / "labels.json", dl_info=info)
    by_patient: dict[int, set[str]] = {}
    for entry in splits.lesions:
        lesion = info.lesions[entry.lesion_idx]
        assert entry.split == lesion.split
        by_patient.setdefault(lesion.patient, set()).add(entry.split)
    assert all(len(s) == 1 for s in by_patient.values())


def test_truth_is_closed_under_expansion_and_respects_exclusions(phantom, shipped_ontology):
    onto = shipped_ontology
    allowed = set(onto.label_set("lesanet171"))
    truth, errors = read_hand_labeled(phantom / "truth.json", known_labels=allowed)
    assert not errors and len(truth) == N_LESIONS
    for record in truth:
        labels = set(record.expanded_terms)
        assert labels == onto.expand(labels) & allowed
        for name in labels:
            assert not (onto.exclusive(name) & labels), (record.lesion_idx, name)


def test_label_json_holds_what_the_sentences_state(phantom, shipped_ontology):
    onto = shipped_ontology
    splits = read_label_split(phantom / "labels.json", known_labels=set(onto.terms))
    assert splits.term_list == onto.label_set("lesanet171")
    truth = {r.lesion_idx: set(r.expanded_terms) for r in read_hand_labeled(phantom / "truth.json")[0]}
    records = [json.loads(line) for line in (phantom / "sentences.jsonl").read_text().splitlines()]
    assert [r["lesion_idx"] for r in records] == list(range(N_LESIONS))
    missing = []
    for entry in splits.lesions:
        record = records[entry.lesion_idx]
        stated = onto.expand(record["relevant"]) & set(splits.term_list)
        assert set(entry.relevant) == stated
        assert set(entry.relevant) <= truth[entry.lesion_idx] | set()  # relevant mentions are true
        missing.append(len(truth[entry.lesion_idx] - set(entry.relevant) - set(entry.uncertain)))
    assert 0.3 < np.mean(missing) < 4.0  # sentences leave labels out, like real reports


def test_sentences_have_exact_spans_and_bookmarks(phantom):
    relations = Counter()
    for line in (phantom / "sentences.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert record["id"] == str(record["lesion_idx"]) and "BOOKMARK" in record["text"]
        for m in record["mentions"]:
            assert record["text"][m["start"] : m["end"]] == m["text"]
            relations[m["relation"]] += 1
        if "OTHER_BMK" in record["text"]:
            assert record["irrelevant"]
    assert relations["relevant"] > relations["uncertain"] > 0 and relations["irrelevant"] > 0


def test_same_seed_same_bytes_whatever_the_workers(phantom, tmp_path, shipped_ontology):
    again = synthesize(tmp_path / "again", N_LESIONS, seed=3, workers=2, onto=shipped_ontology)
    _tree_equal(phantom, again)


def test_label_space_is_long_tailed(tmp_path, shipped_ontology):
    ds = synthesize(tmp_path / "big", 200, seed=11, workers=1, onto=shipped_ontology, write_images=False)
    assert not (ds / "Images_png").exists()
    counts = json.loads((ds / "phantom.json").read_text())["label_counts"]
    assert len(counts) >= 40
    ordered = sorted(counts.values(), reverse=True)
    assert ordered[0] >= 10 * ordered[-1]


def test_cache_shapes_boxes_and_labels(cache, phantom):
    built = PatchCache(cache)
    assert built.patches.shape == (N_LESIONS, 3, 120, 120) and built.patches.dtype == np.uint8
    info = read_dl_info(phantom / "DL_info.csv")
    truth = {r.lesion_idx: r.expanded_terms for r in read_hand_labeled(phantom / "truth.json")[0]}
    for lesion in built.lesions:
        x1, y1, x2, y2 = lesion.box
        assert 0 <= x1 < 59.5 < x2 <= 120 and 0 <= y1 < 59.5 < y2 <= 120
        assert lesion.truth == truth[lesion.lesion_idx] and lesion.sentence
        # the cached patch is the single-lesion preprocessing of the DeepLesion files
        src = info.lesions[lesion.lesion_idx]
        images = phantom / "Images_png"
        provider = lambda n: read_slice_hu(src.slice_path(images, n)) if src.slice_path(images, n).exists() else None  # noqa: E731
        patch, box = lesion_patch(provider, src.key_slice, src.box, src.spacing_mm[:2], src.spacing_mm[2])
        np.testing.assert_array_equal(built.patches[lesion.row], patch)
        np.testing.assert_allclose(lesion.box, box, atol=1e-3)
    assert sum(len(built.rows(s)) for s in ("train", "val", "test")) == N_LESIONS


def test_interrupted_build_resumes_to_identical_cache(cache, phantom, tmp_path):
    out = tmp_path / "resumed"
    with pytest.raises(BuildInterrupted):
        build_cache(
            phantom, phantom / "labels.json", out, workers=1, progress=False, chunk_lesions=4, stop_after_units=3
        )
    assert not (out / "index.json").exists()
    report = build_cache(phantom, phantom / "labels.json", out, workers=2, progress=False, chunk_lesions=4)
    assert 0 < report.resumed_lesions < N_LESIONS
    for name in ("patches.npy", "index.json", "report.json"):
        assert (out / name).read_bytes() == (cache / name).read_bytes(), name


def test_bad_lesions_are_reported_and_skipped(phantom, tmp_path):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(phantom, ds)
    info = read_dl_info(ds / "DL_info.csv")
    broken = info.lesions[0]
    broken.slice_path(ds / "Images_png", broken.key_slice).write_bytes(b"not a png")
    lines = (ds / "DL_info.csv").read_text().splitlines()
    lines[3] = _nan_spacing(lines[3])  # lesion 2 (line 0 is the header)
    (ds / "DL_info.csv").write_text("\n".join(lines) + "\n")
    report = build_cache(ds, ds / "labels.json", tmp_path / "c", workers=1, progress=False)
    bad = {b["lesion_idx"]: b["reason"] for b in report.bad}
    sharing = {
        l.lesion_idx
        for l in info.lesions.values()
        if (l.series_dir, l.key_slice) == (broken.series_dir, broken.key_slice)
    }
    assert sharing <= set(bad) and "unreadable PNG" in bad[0]
    assert 2 in bad and "Spacing" in bad[2]
    assert report.n_lesions == N_LESIONS - len(bad)
    assert len(PatchCache(tmp_path / "c")) == report.n_lesions


def _nan_spacing(line: str) -> str:
    import csv
    import io

    row = next(csv.reader([line]))
    row[12] = "nan, nan, 2.5"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(row)
    return buffer.getvalue()


def test_cli_synth_cache_check_show(tmp_path, capsys):
    from cli import main

    ds, out = tmp_path / "ds", tmp_path / "cache"
    assert main(["synth", "-o", str(ds), "--lesions", "6", "--seed", "5", "--workers", "1"]) == 0
    assert main(["data", "check", "--deeplesion", str(ds), "--labels", str(ds / "labels.json")]) == 0
    assert "6 good rows" in capsys.readouterr().out
    assert (
        main(
            [
                "data",
                "cache",
                "--deeplesion",
                str(ds),
                "--labels",
                str(ds / "labels.json"),
                "-o",
                str(out),
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(PatchCache(out)) == 6
    assert main(["data", "show", str(out), "-o", str(tmp_path / "p.png"), "-n", "4"]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000
    # a non-empty output folder is refused with one line, exit 1
    assert main(["synth", "-o", str(ds), "--lesions", "6"]) == 1
    assert "not empty" in capsys.readouterr().err
    lines = (ds / "DL_info.csv").read_text().splitlines()
    (ds / "DL_info.csv").write_text("\n".join(lines[:2] + [lines[2].replace(",", ";", 3)] + lines[3:]) + "\n")
    assert main(["data", "check", "--deeplesion", str(ds)]) == 3  # some rows bad, the rest good
    assert "DL_info.csv:3: lesion 1" in capsys.readouterr().err


def test_killed_build_process_resumes_to_identical_cache(cache, phantom, tmp_path):
    """SIGKILL a real build mid-way (torn writes included), then resume."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    code = (
        "import sys, time; from vision.data.cache import build_cache\n"
        "import vision.data.cache as c\n"
        "slow = c.read_slice_hu\n"
        "c.read_slice_hu = lambda p: (time.sleep(0.02), slow(p))[1]  # stretch the build so it can be killed\n"
        f"build_cache({str(phantom)!r}, {str(phantom / 'labels.json')!r}, {str(out)!r}, workers=1, progress=False, chunk_lesions=2, sync_seconds=0)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    done = out / ".partial" / "done.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if done.exists() and done.read_text().count("\n") >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    assert not (out / "index.json").exists()
    report = build_cache(phantom, phantom / "labels.json", out, workers=1, progress=False, chunk_lesions=2)
    assert 0 < report.resumed_lesions < N_LESIONS
    for name in ("patches.npy", "index.json", "report.json"):
        assert (out / name).read_bytes() == (cache / name).read_bytes(), name
