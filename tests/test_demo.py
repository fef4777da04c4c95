"""The main job end to end at a tiny size: every room wired together, one command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_demo_runs_end_to_end_inside_its_folder(tmp_path):
    out = tmp_path / "demo"
    before = set(tmp_path.iterdir())
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("MPLCONFIGDIR", None)
    result = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "-o", str(out), "--lesions", "80", "--epochs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(tmp_path.iterdir()) - before == {out}  # nothing beside the output folder
    report = (out / "report.html").read_text(encoding="utf-8")
    for section in ("Table 1", "Table 2", "Mining accuracy", "SPARQL", "Reproduce", "lesanet synth -o"):
        assert section in report
    assert "they match" in report
    assert (out / ".matplotlib").is_dir()  # matplotlib's cache stays inside the folder
    predictions = json.loads((out / "predictions.json").read_text())
    decided = sum(entry["decision"] for record in predictions for entry in record["labels"])
    counts = json.loads((out / "sparql_counts.json").read_text())["results"]["bindings"]
    assert decided == sum(int(row["lesions"]["value"]) for row in counts)
    assert "SPARQL decided-label counts match" in result.stderr
