"""The prepared GPU check (bench/gpu.sh, bench/gpu.py) runs end to end on CPU, so it cannot
rot between GPU loans; and its parts (synthetic cache, time limits, failure reports) hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import gpu  # noqa: E402


def _shim(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    path.chmod(0o755)


def test_dry_run_through_the_fallback_environment(tmp_path: Path):
    """bench/gpu.sh --dry-run as on a GPU machine without python3.11 or a package index:
    `make install` fails, the machine's python3 (here: this interpreter) runs the checkout."""
    shims = tmp_path / "bin"
    shims.mkdir()
    _shim(shims, "make", 'echo "make: no python3.11 here (test shim)" >&2; exit 2')
    _shim(shims, "python3", f'exec "{sys.executable}" "$@"')
    env = {k: v for k, v in os.environ.items() if k not in ("LESANET_PYTHON", "PYTHONPATH")}
    env["PATH"] = f"{shims}{os.pathsep}{env['PATH']}"
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", "bench/gpu.sh", "--dry-run", str(out), "--labels", "none"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "using the machine's python3" in proc.stderr
    report = json.loads((out / "gpu.json").read_text(encoding="utf-8"))
    assert report["environment"].startswith("the machine's python3")
    assert report["setup"]["cache_train"] == gpu.PROFILES["dry-run"].train_lesions
    assert "synthesised" in report["setup"]["labels"]
    m = report["measurements"]
    assert list(m) == list(gpu.MEASUREMENTS)
    assert {name: x["status"] for name, x in m.items()} == {name: "ok" for name in gpu.MEASUREMENTS}
    step = m["train_step"]["figures"]
    for variant in gpu.TRAIN_VARIANTS:
        assert step[variant]["lesions_per_s"] > 0 and np.isfinite(step[variant]["loss"])
    assert m["cli_epoch"]["figures"]["checkpoint_written"] and m["cli_epoch"]["figures"]["lesions_per_s"] > 0
    assert m["torchrun"]["figures"]["processes"] == 2 and m["torchrun"]["figures"]["checkpoint_written"]
    assert m["search"]["figures"]["agrees_with_brute_force"] is True
    assert m["inference"]["figures"]["float32 (as shipped)"]["batch_1"]["lesions_per_s"] > 0
    assert m["compile"]["figures"]["compiled"]["lesions_per_s"] > 0
    rows = report["derived"]["rows"]
    epochs, lesions = step["epochs"], step["train_lesions"]
    assert rows["float32"]["schedule_s"] == pytest.approx(
        epochs * lesions / step["float32"]["lesions_per_s"], rel=0.01, abs=0.05
    )  # reported to 0.1 s
    md = (out / "gpu.md").read_text(encoding="utf-8")
    assert "## torchrun: ok" in md and "| bf16_channels_last |" in md
    assert (out / "gpu-log.txt").stat().st_size > 0


def test_synthetic_labels_are_plausible_and_the_cache_trains(tmp_path: Path, shipped_ontology):
    from vision.config import load_config
    from vision.data.cache import PatchCache
    from vision.engines.train import load_training_data

    records = gpu.synthetic_label_records(shipped_ontology, 300, 40, seed=3)
    assert [r["split"] for r in records].count("val") == 40
    labels = set(shipped_ontology.label_set("lesanet171"))
    assert all(r["relevant"] and set(r["relevant"]) <= labels for r in records)
    assert all(sum(shipped_ontology.category(n) == "bodypart" for n in r["relevant"]) == 1 for r in records)
    assert not any(set(r["uncertain"]) & set(r["relevant"]) for r in records)
    # frequent labels are drawn often, as in DeepLesion (lymph node is its most frequent label)
    bodyparts = [n for r in records for n in r["relevant"] if shipped_ontology.category(n) == "bodypart"]
    assert max(set(bodyparts), key=bodyparts.count) == "lymph node"
    cache = gpu.write_synthetic_cache(
        tmp_path / "cache", gpu.take(records, 20, 5), shipped_ontology.label_set("lesanet171"), shipped_ontology.version
    )
    opened = PatchCache(cache)
    assert opened.patches.shape == (25, 3, 120, 120) and len(opened) == 25
    boxes = np.array([lesion.box for lesion in opened.lesions])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 120).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    data = load_training_data(load_config(ROOT / "configs" / "cpu-small.yaml"), cache, shipped_ontology)
    assert data.train_rows.numel() == 20 and data.val_rows.numel() == 5
    assert data.positive.shape == (25, 171) and data.positive.sum(1).min() >= 1


def test_official_labels_are_read_with_the_project_reader(lesanet_data: Path, shipped_ontology):
    records = gpu.official_label_records(lesanet_data / "text_mined_labels_171_and_split.json", shipped_ontology)
    splits = [r["split"] for r in records]
    assert (splits.count("train"), splits.count("val")) == (gpu.OFFICIAL_SIZES["train"], gpu.OFFICIAL_SIZES["val"])
    assert "test" not in splits
    assert gpu.find_labels(None) is not None and gpu.find_labels("none") is None


def test_a_hung_process_is_killed_at_its_bound_and_a_failure_is_one_line(tmp_path: Path):
    runner = gpu.Runner(gpu.PROFILES["dry-run"], tmp_path, tmp_path, budget_s=60)
    began = time.perf_counter()
    code, _, seconds = runner._run("sleeper", ["-c", "import time; time.sleep(60)"], bound=1.0)
    assert code is None and time.perf_counter() - began < 15
    code, text, _ = runner._run("boom", ["-c", "raise ValueError('bad cache row 7')"], bound=30)
    assert code == 1 and gpu._error_line(text, code) == "exit 1: ValueError: bad cache row 7"
    assert "===== sleeper" in (tmp_path / "gpu-log.txt").read_text(encoding="utf-8")


def test_a_failing_measurement_is_reported_and_an_exhausted_budget_skips(tmp_path: Path):
    profile = gpu.PROFILES["dry-run"]
    runner = gpu.Runner(profile, tmp_path, tmp_path, budget_s=60)
    outcome = runner.measure("inference")  # no cache in this work folder
    assert outcome.status == "failed" and outcome.error is not None and "index.json" in outcome.error
    assert gpu.Runner(profile, tmp_path, tmp_path, budget_s=1).measure("search").status == "skipped"
