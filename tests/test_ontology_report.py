"""`lesanet ontology report` (quality checks) and `lesanet ontology diff` (what an edit did)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rdflib import Graph, Literal, URIRef
from rdflib.namespace import OWL, RDF, RDFS, SKOS

from ontology import LESION, load_ontology
from ontology.diff import diff_ontologies, label_effect, staleness
from ontology.model import SHIPPED_OWL, _read_rdf
from ontology.quality import quality_report
from ontology.vocab import CATEGORY, LESANET_INDEX

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=ROOT)


def edited(tmp_path: Path, edit, name: str = "edited.ttl") -> Path:
    graph = Graph().parse(SHIPPED_OWL, format="xml")
    edit(graph)
    path = tmp_path / name
    graph.serialize(path, format="turtle")
    return path


def rules(path: Path) -> dict[str, set[str]]:
    report = quality_report(_read_rdf(path), str(path))
    found: dict[str, set[str]] = {}
    for p in report.problems:
        found.setdefault(f"{p.level} {p.rule}", set()).add(p.subject)
    return found


# ------------------------------------------------------------------ report


def test_shipped_ontology_has_no_errors():
    result = run_cli("ontology", "report", "--format", "json")
    assert result.returncode == 0, result.stdout[-2000:]
    doc = json.loads(result.stdout)
    assert doc["counts"]["ERROR"] == 0
    assert {p["rule"] for p in doc["problems"]} <= {"label_case", "missing_definition", "no_synonyms", "unmapped_label"}


def test_errors_fail_the_report_and_are_named(tmp_path):
    def edit(g: Graph) -> None:
        g.add((LESION.liver_copy, RDF.type, OWL.Class))  # same label as liver
        g.add((LESION.liver_copy, RDFS.label, Literal("liver")))
        g.add((LESION.liver_copy, CATEGORY, Literal("bodypart")))
        g.add((LESION.forgotten, RDF.type, OWL.Class))  # no category: not a term
        g.add((LESION.forgotten, RDFS.label, Literal("forgotten")))
        g.add((LESION.forgotten, RDFS.subClassOf, LESION.liver))
        g.add((LESION.kidney, URIRef("https://example.org/undeclared"), Literal("x")))

    path = edited(tmp_path, edit)
    found = rules(path)  # the loader would refuse this file; the report lists every problem
    assert found["ERROR duplicate_label"] == {"liver"}
    assert found["ERROR missing_category"] == {"forgotten"}
    assert found["ERROR undeclared_property"] == {"https://example.org/undeclared"}
    result = run_cli("ontology", "report", "--ontology", str(path))
    assert result.returncode == 1
    assert "duplicate_label" in result.stdout


def test_exclusion_against_the_hierarchy_is_an_error(tmp_path):
    path = edited(tmp_path, lambda g: g.add((LESION.rectum, OWL.disjointWith, LESION.pelvis)))  # rectum ⊑ pelvis
    found = rules(path)
    assert found["ERROR exclusion_contradicts_hierarchy"] == {"pelvis ⊥ rectum"}
    result = run_cli("ontology", "report", "--ontology", str(path), "--format", "json")
    assert result.returncode == 1 and json.loads(result.stdout)["counts"]["ERROR"] == 1


def test_warnings_for_editing_slips(tmp_path):
    def edit(g: Graph) -> None:
        g.add((LESION.liver, SKOS.altLabel, Literal("hepar")))
        g.add((LESION.spleen, SKOS.altLabel, Literal("hepar")))  # one synonym, two classes
        g.set((LESION.lung, RDFS.label, Literal("lung ")))
        g.remove((LESION.kidney, URIRef(str(LESION) + "deeplesionOccurrences"), None))
        g.add((LESION.nodule, OWL.deprecated, Literal(True)))

    found = rules(edited(tmp_path, edit))
    assert found["WARN shared_synonym"] == {"hepar"}
    assert "lung " in found["WARN label_whitespace"]
    assert found["WARN label_without_count"] == {"kidney"}
    assert found["WARN deprecated_in_use"] == {"nodule"}
    assert found["WARN stale_version_iri"]  # content changed, header not
    assert not any(k.startswith("ERROR") for k in found)


# ------------------------------------------------------------------ diff


def _labels_json(tmp_path: Path) -> Path:
    term_list = ["kidney", "kidney cyst", "cyst", "liver", "liver mass", "mass", "lung", "nodule"]
    data = {
        "term_list": term_list,
        "train_lesion_idxs": [0, 1, 2],
        "train_relevant_labels": [[0, 2], [3], [6, 7]],  # kidney+cyst, liver, lung+nodule
        "train_uncertain_labels": [[], [], []],
        "train_irrelevant_labels": [[], [], []],
    }
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(data))
    return path


def test_diff_names_the_changes_and_their_downstream_effect(tmp_path):
    def edit(g: Graph) -> None:
        new = LESION.hepatic_cyst
        g.add((new, RDF.type, OWL.Class))
        g.add((new, RDFS.label, Literal("hepatic cyst")))
        g.add((new, CATEGORY, Literal("type")))
        g.add((new, RDFS.subClassOf, LESION.cyst))
        g.add((new, LESANET_INDEX, Literal(171)))
        g.add((LESION.liver, SKOS.altLabel, Literal("hepar")))
        g.add((LESION.liver, OWL.disjointWith, LESION.lung))  # already inherited? (chest ⊥ abdomen)
        g.add((LESION.nodule, RDFS.subClassOf, LESION.mass))  # nodules now imply mass
        g.set((LESION.spleen, RDFS.label, Literal("splenic")))

    old, new = load_ontology(SHIPPED_OWL), load_ontology(edited(tmp_path, edit))
    result = diff_ontologies(old, new)
    assert result.added == ["hepatic cyst"]
    assert result.relabelled == [("spleen", "splenic")]
    changes = {c.name: c.changes for c in result.changed}
    assert "synonyms added: hepar" in changes["liver"]
    assert "parents added: mass" in changes["nodule"]
    effect = label_effect(old, new, _labels_json(tmp_path))
    assert "implied labels added: mass" in effect["labels_changing_meaning"]["nodule"]
    assert effect["labels_changing_meaning"]["liver"] == ["synonyms added: hepar"]
    assert effect["train_lesions_targets_changed"] == 1  # the lung nodule lesion gains mass
    assert effect["train_lesions_exclusive_changed"] >= 1


def test_diff_tells_a_stale_cache_and_run(tmp_path):
    old = load_ontology(SHIPPED_OWL)
    new = load_ontology(edited(tmp_path, lambda g: g.add((LESION.liver, SKOS.altLabel, Literal("hepar")))))
    cache, run = tmp_path / "cache", tmp_path / "run"
    cache.mkdir(), run.mkdir()
    (cache / "index.json").write_text(json.dumps({"ontology_version": old.version}))
    (run / "run.json").write_text(json.dumps({"ontology_version": new.version}))
    assert staleness("cache", cache, old, new)["stale"]
    assert not staleness("run", run, old, new)["stale"]
    result = run_cli(
        "ontology", "diff", str(SHIPPED_OWL), str(tmp_path / "edited.ttl"), "--cache", str(cache), "--run", str(run)
    )
    assert result.returncode == 0, result.stderr
    assert f"cache {cache}: stale: built with OLD {old.version}" in result.stdout
    assert f"run {run}: current" in result.stdout


def test_diff_of_a_file_with_itself_is_empty():
    result = run_cli("ontology", "diff", str(SHIPPED_OWL), str(SHIPPED_OWL), "--json")
    doc = json.loads(result.stdout)
    assert doc["old_version"] == doc["new_version"]
    assert not (doc["added"] or doc["removed"] or doc["changed"] or doc["relabelled"] or doc["renamed"])


@pytest.mark.parametrize("kind", ["cache", "run"])
def test_staleness_needs_a_recorded_version(tmp_path, kind):
    from ontology import OntologyError

    (tmp_path / ("index.json" if kind == "cache" else "run.json")).write_text("{}")
    with pytest.raises(OntologyError, match="records no ontology_version"):
        staleness(kind, tmp_path, load_ontology(), load_ontology())
