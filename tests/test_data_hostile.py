"""Hostile DeepLesion folders never sink `data cache`; the cache commits as one unit;
killed builds leave no workers and no temp files.

Every bad record is named (file, line or lesion) and skipped, `data check` refuses the
same rows `data cache` skips (one validator), and the exit code follows the batch rule.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vision.data.cache import PatchCache, build_cache
from vision.data.deeplesion import (
    DL_INFO_COLUMNS,
    INDEX_RANGES,
    MAX_IMAGE_SIDE,
    DataError,
    read_dl_info,
    read_slice_hu,
)
from vision.data.phantom import synthesize

ROOT = Path(__file__).resolve().parents[1]
N = 12


@pytest.fixture(scope="module")
def phantom(tmp_path_factory, shipped_ontology) -> Path:
    return synthesize(tmp_path_factory.mktemp("hostile") / "ds", N, seed=11, workers=1, onto=shipped_ontology)


@pytest.fixture()
def ds(phantom, tmp_path) -> Path:
    copy = tmp_path / "ds"
    shutil.copytree(phantom, copy)
    return copy


def _set_field(ds: Path, lesion_idx: int, column: str, value: str) -> None:
    path = ds / "DL_info.csv"
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    rows[lesion_idx + 1][DL_INFO_COLUMNS.index(column)] = value
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` × ``height`` 16-bit grey pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def _cache_argv(ds: Path, out: Path) -> list[str]:
    return [
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


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("Patient_index", "1e300", "Patient_index '1e300' is outside"),
        ("Study_index", "123456", "Study_index '123456' is outside"),
        ("Key_slice_index", "-3", "Key_slice_index '-3' is outside"),
        ("Image_size", "20000, 20000", "over the 4096-pixel limit"),
        ("Spacing_mm_px_", "1e300, 1e300, 1", "not a CT spacing"),
        ("Patient_age", "1e300", "Patient_age '1e300' is outside"),
        ("Possibly_noisy", "7", "Possibly_noisy '7' is not 0 or 1"),
        ("Bounding_boxes", "9000, 9000, 9001, 9001", "centre outside"),
    ],
)
def test_check_refuses_the_rows_cache_skips(ds, tmp_path, capsys, column, value, reason):
    _set_field(ds, 1, column, value)
    code, err = _cli(["data", "check", "--deeplesion", str(ds), "--labels", str(ds / "labels.json")], capsys)
    assert code == 3 and "DL_info.csv:3: lesion 1: " in err and reason in err
    code, err = _cli(_cache_argv(ds, tmp_path / "c"), capsys)
    assert code == 3 and "lesion 1: " in err and reason in err and "Traceback" not in err
    assert 1 not in {e.lesion_idx for e in PatchCache(tmp_path / "c").lesions}
    assert len(PatchCache(tmp_path / "c")) == N - 1


@pytest.mark.parametrize("side", [20_000, 9_000])
def test_oversized_png_slice_is_refused_unread_and_named(ds, tmp_path, capsys, side):
    info = read_dl_info(ds / "DL_info.csv")
    lesion = info.lesions[0]
    key = lesion.slice_path(ds / "Images_png", lesion.key_slice)
    key.write_bytes(png_header(side, side))
    with pytest.raises(DataError, match=rf"{key}: a .*PNG.* over the {MAX_IMAGE_SIDE}-pixel limit"):
        read_slice_hu(key)
    code, err = _cli(_cache_argv(ds, tmp_path / "c"), capsys)
    sharing = [
        l.lesion_idx
        for l in info.lesions.values()
        if (l.series_dir, l.key_slice) == (lesion.series_dir, lesion.key_slice)
    ]
    assert code == 3 and str(key) in err
    assert len(PatchCache(tmp_path / "c")) == N - len(sharing)


def test_bad_sentence_lines_are_named_and_the_rest_kept(ds, tmp_path, capsys):
    lines = (ds / "sentences.jsonl").read_bytes().splitlines()
    hostile = [
        b"{torn",
        b'{"lesion_idx": 0, "text": "\\ud800"}',
        b"[" * 20_000 + b"]" * 20_000,
        b'{"lesion_idx": ' + b"9" * 5_000 + b', "text": "x"}',
        b'{"lesion_idx": true, "text": "x"}',
        b"\xff\xfe",
    ]
    (ds / "sentences.jsonl").write_bytes(b"\n".join(lines[:1] + hostile + lines[1:]) + b"\n")
    code, err = _cli(_cache_argv(ds, tmp_path / "c"), capsys)
    assert code == 3 and "Traceback" not in err
    for number in range(2, 2 + len(hostile)):
        assert f"sentences.jsonl:{number}: bad sentence record" in err
    cache = PatchCache(tmp_path / "c")
    assert len(cache) == N and sum(e.sentence is not None for e in cache.lesions) == len(lines)


def test_nothing_cached_is_an_error(ds, tmp_path, capsys):
    header = (ds / "DL_info.csv").read_text().splitlines()[0]
    no_images = tmp_path / "no_images"
    shutil.copytree(ds, no_images)
    shutil.rmtree(no_images / "Images_png")
    code, err = _cli(_cache_argv(no_images, tmp_path / "c1"), capsys)
    assert code == 1 and f"none of the {N} lesions could be cached" in err and "key slice" in err
    assert not (tmp_path / "c1" / "index.json").exists()
    (ds / "DL_info.csv").write_text(header + "\n")
    code, err = _cli(_cache_argv(ds, tmp_path / "c2"), capsys)
    assert code == 1 and "can be cached" in err and "not a row of" in err


def test_stale_temp_files_of_a_killed_build_are_removed(ds, tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    stale = [out / ".patches.npy.tmp", out / ".index.json.x1y2", out / ".report.json.q"]
    for path in stale:
        path.write_bytes(b"left by a killed build")
    build_cache(ds, ds / "labels.json", out, workers=1, progress=False)
    assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in out.iterdir()) == [".build.lock", "index.json", "patches.npy", "report.json"]
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in out.iterdir())


def test_a_second_build_into_the_same_cache_is_refused_while_one_runs(ds, tmp_path):
    from vision.data.workers import BuildLocked, build_lock

    out = tmp_path / "c"
    with build_lock(out / ".build.lock", "test"):
        with pytest.raises(BuildLocked, match="another process is building it"):
            build_cache(ds, ds / "labels.json", out, workers=1, progress=False)


# ---------------------------------------------------------------------------- the commit window

_KILLER = """
import os, signal, sys
import vision.data.cache as cache
where, when = sys.argv[1], sys.argv[2]
real_replace = os.replace
def replace(src, dst):
    hit = os.path.basename(str(dst)) == where
    if hit and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
    if hit and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
cache.build_cache(sys.argv[3], sys.argv[4], sys.argv[5], workers=1, progress=False)
"""


@pytest.mark.parametrize(
    ("where", "when"),
    [("patches.npy", "before"), ("patches.npy", "after"), ("report.json", "after"), ("index.json", "before")],
)
def test_kill_9_in_the_commit_window_never_leaves_new_patches_under_an_old_index(ds, tmp_path, where, when):
    labels = json.loads((ds / "labels.json").read_text())
    fewer = {k: v[2:] if k.startswith("train_") else v for k, v in labels.items()}  # two lesions fewer
    (tmp_path / "fewer.json").write_text(json.dumps(fewer))
    out, reference = tmp_path / "c", tmp_path / "reference"
    old = build_cache(ds, tmp_path / "fewer.json", out, workers=1, progress=False)  # the cache being replaced
    build_cache(ds, ds / "labels.json", reference, workers=1, progress=False)
    assert old.n_lesions < N
    proc = subprocess.run(
        [sys.executable, "-c", _KILLER, where, when, str(ds), str(ds / "labels.json"), str(out)],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    with pytest.raises(DataError, match="no index.json, so no complete cache"):
        PatchCache(out)  # neither the old cache nor the new one: refused, never mixed
    build_cache(ds, ds / "labels.json", out, workers=1, progress=False)  # the rerun finishes the job
    for name in ("patches.npy", "index.json", "report.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not list(out.glob(".*.tmp")) and not (out / ".partial").exists()


def test_patches_replaced_under_an_index_are_refused(ds, tmp_path):
    out = tmp_path / "c"
    build_cache(ds, ds / "labels.json", out, workers=1, progress=False)
    import numpy as np

    np.save(out / "patches.npy", np.zeros((N + 1, 3, 120, 120), np.uint8))
    with pytest.raises(DataError, match="is not the one index.json was written for"):
        PatchCache(out)


# ---------------------------------------------------------------------------- workers die with the parent


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


_SLOW_PNG = """
import time
import PIL.Image
_open = PIL.Image.open
def _slow_open(*args, **kwargs):  # every process of the job, workers included, decodes slowly
    time.sleep(0.3)
    return _open(*args, **kwargs)
PIL.Image.open = _slow_open
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find the workers")
@pytest.mark.parametrize("job", ["cache", "synth"])
def test_killed_jobs_leave_no_live_workers(phantom, tmp_path, job):
    env = dict(os.environ)
    if job == "cache":
        (tmp_path / "slow").mkdir()
        (tmp_path / "slow" / "sitecustomize.py").write_text(_SLOW_PNG)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "slow"), str(ROOT)])
        code = (
            "from vision.data.cache import build_cache\n"
            f"build_cache({str(phantom)!r}, {str(phantom / 'labels.json')!r}, {str(tmp_path / 'c')!r}, workers=2, "
            "progress=False, chunk_lesions=1)\n"
        )
    else:
        code = f"from vision.data.phantom import synthesize\nsynthesize({str(tmp_path / 'ph')!r}, 3000, workers=2)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 90
        workers: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            workers = [c for c in _children(proc.pid) if _alive(c)]
            if len(workers) >= 2:
                time.sleep(1.0)  # let the workers start (their initializer arms the parent-death signal)
                break
            time.sleep(0.05)
        assert len(workers) >= 2, "the job finished (or failed) before its workers were seen"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "a worker outlived its killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if job == "synth":  # the next synth removes the killed one's work folder
        assert list(tmp_path.glob(".ph.tmp*"))
        synthesize(tmp_path / "ph", 3, workers=1)
        assert not list(tmp_path.glob(".ph.tmp*"))


# ---------------------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    column=st.sampled_from(list(INDEX_RANGES) + ["Image_size", "Spacing_mm_px_", "Patient_age"]),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers().map(str),
        st.text(st.characters(blacklist_characters="\r\n"), max_size=10),
    ),
)
def test_any_numeric_value_is_in_range_or_named(phantom, tmp_path_factory, column, value):
    ds = tmp_path_factory.mktemp("prop")
    shutil.copy(phantom / "DL_info.csv", ds / "DL_info.csv")
    if column in ("Image_size", "Spacing_mm_px_"):
        value = ", ".join([value] * (2 if column == "Image_size" else 3))
    _set_field(ds, 0, column, value)
    info = read_dl_info(ds / "DL_info.csv", strict=False)
    assert len(info.lesions) + len(info.errors) == N
    if 0 in info.lesions:
        lesion = info.lesions[0]
        for name, got in (
            ("Patient_index", lesion.patient),
            ("Study_index", lesion.study),
            ("Series_ID", lesion.series),
            ("Key_slice_index", lesion.key_slice),
        ):
            lo, hi = INDEX_RANGES[name]
            assert lo <= got <= hi
        assert max(lesion.image_size) <= MAX_IMAGE_SIDE and lesion.age is None or 0 <= lesion.age <= 150
        assert len(lesion.series_dir) < 30
    else:
        assert str(info.errors[0]).startswith(f"{ds / 'DL_info.csv'}:2: lesion 0: ")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_as_a_png_slice_give_hu_or_a_named_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("png") / "001.png"
    for payload in (data, png_header(5, 5)[:33] + data):
        path.write_bytes(payload)
        try:
            hu = read_slice_hu(path)
        except DataError as exc:
            assert str(path) in str(exc)
        else:
            assert hu.ndim == 2 and max(hu.shape) <= MAX_IMAGE_SIDE


def test_synth_and_cache_outputs_have_ordinary_modes(phantom, tmp_path):
    from ontology.files import default_file_mode

    file_mode = default_file_mode()
    assert phantom.stat().st_mode & 0o777 == file_mode | (file_mode & 0o444) >> 2  # not mkdtemp's 0700
    for name in ("DL_info.csv", "labels.json", "truth.json", "sentences.jsonl", "phantom.json"):
        assert (phantom / name).stat().st_mode & 0o777 == file_mode, name
