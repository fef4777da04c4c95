"""SSSOM mapping files: skos:exactMatch / closeMatch with provenance, per term, in stats and in RDF."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ontology import OntologyError, load_ontology

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "data" / "example-mappings.sssom.tsv"  # illustrative codes, not real RIDs


def test_mappings_attach_with_provenance_and_keep_the_version():
    plain = load_ontology()
    mapped = load_ontology(mappings=[EXAMPLE])
    (kidney,) = mapped.mappings("renal")  # by synonym too
    assert kidney.predicate == "exactMatch"
    assert kidney.object_id == "EXAMPLE:kidney-0001"
    assert kidney.object_iri == "https://example.org/not-a-real-code/kidney-0001"
    assert kidney.mapping_set == "https://example.org/lesanet/example-mappings"
    assert kidney.justification == "semapv:ManualMappingCuration" and kidney.confidence == 0.95
    assert [m.predicate for m in mapped.mappings("lung nodule")] == ["closeMatch"]
    assert mapped.mappings("liver") == []
    assert mapped.stats()["mapped_terms"] == 3 and plain.stats()["mapped_terms"] == 0
    assert mapped.version == plain.version  # codes for terms do not change what terms mean
    assert plain.mappings("kidney") == []  # the cached plain ontology is untouched


def test_mappings_survive_a_save_in_turtle(tmp_path):
    mapped = load_ontology(mappings=[EXAMPLE])
    path = tmp_path / "mapped.ttl"
    path.write_text(mapped.serialize("ttl"))
    again = load_ontology(path)
    assert again.mappings("lung nodule") == mapped.mappings("lung nodule")


def _sssom(tmp_path: Path, rows: list[str], header: str | None = None) -> Path:
    head = (
        header
        if header is not None
        else (
            "#mapping_set_id: https://example.org/m\n#license: https://example.org/l\n"
            "#curie_map:\n#  EX: https://example.org/code/\n"
        )
    )
    path = tmp_path / "m.sssom.tsv"
    path.write_text(
        head + "subject_id\tpredicate_id\tobject_id\tmapping_justification\n" + "".join(r + "\n" for r in rows)
    )
    return path


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            "lesion:no_such_term\tskos:exactMatch\tEX:1\tsemapv:ManualMappingCuration",
            "line 6: subject 'lesion:no_such_term'",
        ),
        ("lesion:kidney\tskos:broadMatch\tEX:1\tsemapv:ManualMappingCuration", "line 6: predicate 'skos:broadMatch'"),
        ("lesion:kidney\tskos:exactMatch\tNOPE:1\tsemapv:ManualMappingCuration", "line 6: object_id 'NOPE:1'"),
        ("lesion:kidney\tskos:exactMatch\tEX:1\t", "line 6: empty mapping_justification"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path, row, message):
    path = _sssom(tmp_path, [row])
    with pytest.raises(OntologyError, match=message):
        load_ontology(mappings=[path])


def test_header_must_identify_and_license_the_set(tmp_path):
    path = _sssom(tmp_path, [], header="#mapping_set_id: https://example.org/m\n")
    with pytest.raises(OntologyError, match="lacks 'license'"):
        load_ontology(mappings=[path])


def test_cli_stats_counts_mapped_terms():
    result = subprocess.run(
        [sys.executable, "-m", "cli", "ontology", "stats", "--json", "--mappings", str(EXAMPLE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert '"mapped_terms": 3' in result.stdout


def test_rdf_predictions_carry_the_mapped_codes():
    from rdflib import Graph, URIRef
    from rdflib.namespace import SKOS

    from kg.rdf import prediction_ntriples

    onto = load_ontology(mappings=[EXAMPLE])
    labels = ["kidney", "lung nodule", "liver"]
    record = {
        "lesion_id": "phantom/1",
        "source": {
            "dataset": "phantom",
            "lesion_idx": 1,
            "file": "Images_png/000001_01_01/045.png",
            "slice": 45,
            "box_px": [10, 10, 20, 20],
            "spacing_mm": [0.8, 0.8, 2.0],
        },
        "labels": [{"label": n, "iri": onto.iri(n), "score": 0.9, "threshold": 0.5, "decision": True} for n in labels],
        "model": {"name": "LesaNet", "version": "0.1.0", "checkpoint_sha256": "0" * 64, "config": "cpu-small"},
        "ontology_version": onto.version,
    }
    graph = Graph().parse(data="".join(prediction_ntriples([record], onto)), format="nt")
    kidney, nodule = URIRef(onto.iri("kidney")), URIRef(onto.iri("lung nodule"))
    assert (kidney, SKOS.exactMatch, URIRef("https://example.org/not-a-real-code/kidney-0001")) in graph
    assert (nodule, SKOS.closeMatch, URIRef("https://example.org/not-a-real-code/pulmonary-nodule-0003")) in graph
    assert not list(graph.objects(URIRef(onto.iri("liver")), SKOS.exactMatch))
