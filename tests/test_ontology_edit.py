"""An ontology edit end to end, with the OWL API standing in for Protégé.

The edit adds a class (label, synonym, category, parent, LesaNet-label membership); a
separate edit adds a disjointness that makes existing classes unsatisfiable. The bad edit
is caught by `ontology check` (HermiT agrees); the good one flows through the whole chain
with no code change: mining via the synonym, the label JSON, the patch cache, a one-epoch
training run with 172 labels, and prediction scoring the new label.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rdflib import Graph, Literal
from rdflib.namespace import SKOS

from ontology import LESION

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "ontology" / "lesion.owl"
NEW = {"label": "biloma", "synonym": "bile collection", "category": "type", "parent": "fluid"}
TINY = [
    "model.widths=[4, 8, 8, 16, 16]",
    "model.roi_fc=16",
    "model.embed_dim=16",
    "loss.rhem_samples=500",
    "loss.triplet_count=200",
    "train.batch_size=16",
]


def lesanet(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(
        [sys.executable, "-m", "cli", *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
    )
    return result


def ok(*args: object) -> subprocess.CompletedProcess[str]:
    result = lesanet(*args)
    assert result.returncode == 0, f"lesanet {' '.join(map(str, args))}\n{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def edits(owl_tool, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("edits")
    good, bad = folder / "good.owl", folder / "bad.owl"
    owl_tool(
        "add-class",
        SHIPPED,
        good,
        LESION[NEW["label"]],
        NEW["label"],
        NEW["synonym"],
        NEW["category"],
        LESION[NEW["parent"]],
        171,
    )
    owl_tool("add-disjoint", SHIPPED, bad, LESION.kidney, LESION.cyst)  # kidney cyst is below both
    return {"good": good, "bad": bad}


def test_check_names_the_unsatisfiable_class_and_hermit_agrees(edits):
    result = lesanet("ontology", "check", "--ontology", edits["bad"])
    assert result.returncode == 1
    assert "'kidney cyst' is unsatisfiable" in result.stdout
    assert "HermiT: consistent=True, 2 unsatisfiable" in result.stdout
    assert "disagree" not in result.stdout
    good = ok("ontology", "check", "--ontology", edits["good"])
    assert "consistent and coherent" in good.stdout


def test_report_and_diff_describe_the_good_edit(edits):
    report = json.loads(ok("ontology", "report", "--ontology", edits["good"], "--format", "json").stdout)
    assert report["counts"]["ERROR"] == 0
    assert {"rule": "label_without_count", "subject": "biloma"}.items() <= next(
        p for p in report["problems"] if p["subject"] == "biloma"
    ).items()
    diff = json.loads(ok("ontology", "diff", SHIPPED, edits["good"], "--json").stdout)
    assert diff["added"] == ["biloma"] and not diff["removed"] and not diff["changed"]


@pytest.fixture(scope="module")
def chain(edits, tmp_path_factory) -> dict[str, Path]:
    """synth → (sentences naming the new term by its synonym) → mine → split → cache → train → predict."""
    out = tmp_path_factory.mktemp("chain")
    onto = ("--ontology", edits["good"])
    phantom = out / "phantom"
    ok("synth", "-o", phantom, "--lesions", 60, "--seed", 0, "--workers", 1, *onto)
    records = [json.loads(line) for line in (phantom / "sentences.jsonl").read_text().splitlines()]
    with (out / "sentences.jsonl").open("w") as handle:
        for i, record in enumerate(records):
            if i % 3 == 0:  # a report sentence that uses the new term's synonym for the bookmarked lesion
                record = {
                    "id": record["id"],
                    "lesion_idx": record["lesion_idx"],
                    "text": record["text"].replace("BOOKMARK", f"{NEW['synonym']} BOOKMARK", 1),
                }
            handle.write(json.dumps(record) + "\n")
    ok("textmine", "run", out / "sentences.jsonl", "-o", out / "mined.jsonl", *onto)
    ok(
        "textmine",
        "build-split",
        out / "mined.jsonl",
        "--reference",
        phantom / "labels.json",
        "-o",
        out / "labels.json",
        *onto,
    )
    ok(
        "data",
        "cache",
        "--deeplesion",
        phantom,
        "--labels",
        out / "labels.json",
        "-o",
        out / "cache",
        "--workers",
        1,
        *onto,
    )
    sets = [arg for override in TINY for arg in ("--set", override)]
    ok(
        "train",
        "--config",
        ROOT / "configs" / "cpu-small.yaml",
        "--data",
        out / "cache",
        "-o",
        out / "run",
        "--epochs",
        1,
        "--quiet",
        "--no-calibrate",
        "--threads",
        1,
        *sets,
        *onto,
    )
    predicted = ok(
        "predict",
        out / "run",
        "--data",
        out / "cache",
        "--split",
        "test",
        "--json",
        "-o",
        out / "predictions.json",
        *onto,
    )
    (out / "predict.stderr").write_text(predicted.stderr)
    return {"out": out, "phantom": phantom}


def test_the_miner_finds_the_new_term_by_its_synonym(chain):
    mined = [json.loads(line) for line in (chain["out"] / "mined.jsonl").read_text().splitlines()]
    hits = [m for r in mined for m in r["mentions"] if m["label"] == NEW["label"]]
    assert hits and all(m["text"] == NEW["synonym"] for m in hits)
    assert sum(NEW["label"] in r["relevant"] for r in mined) == len(mined[::3])


def test_label_json_cache_and_run_carry_the_larger_label_set(chain):
    term_list = json.loads((chain["out"] / "labels.json").read_text())["term_list"]
    assert len(term_list) == 172 and term_list[171] == NEW["label"]
    index = json.loads((chain["out"] / "cache" / "index.json").read_text())
    run = json.loads((chain["out"] / "run" / "run.json").read_text())
    assert index["term_list"] == term_list == run["term_list"]


def test_predict_scores_the_new_label(chain):
    records = json.loads((chain["out"] / "predictions.json").read_text())
    for record in records:
        (entry,) = [e for e in record["labels"] if e["label"] == NEW["label"]]
        assert 0.0 <= entry["score"] <= 1.0 and entry["iri"] == str(LESION[NEW["label"]])
    assert "made with ontology" not in (chain["out"] / "predict.stderr").read_text()


def test_another_ontology_version_is_warned_and_the_run_is_stale(chain, edits, tmp_path):
    graph = Graph().parse(edits["good"], format="xml")
    graph.add((LESION.biloma, SKOS.altLabel, Literal("bile leak")))
    later = tmp_path / "later.ttl"
    graph.serialize(later, format="turtle")
    out = chain["out"]
    result = ok("predict", out / "run", "--data", out / "cache", "--split", "test", "--json", "--ontology", later)
    warning = next(line for line in result.stderr.splitlines() if "made with ontology" in line)
    run_version = json.loads((out / "run" / "run.json").read_text())["ontology_version"]
    assert run_version in warning and "sha256:" in warning.split(" is ")[-1]
    diff = ok(
        "ontology",
        "diff",
        edits["good"],
        later,
        "--labels",
        out / "labels.json",
        "--cache",
        out / "cache",
        "--run",
        out / "run",
    ).stdout
    assert "changed: biloma: synonyms added: bile leak" in diff
    assert f"run {out / 'run'}: stale: built with OLD" in diff
