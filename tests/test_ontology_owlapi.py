"""The shipped ontology through the OWL API (the library Protégé is built on): OWL 2 DL
profile, and a round trip through every format Protégé can save."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ontology import OntologyError, load_ontology

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "ontology" / "lesion.owl"


@pytest.fixture(scope="module")
def saved_formats(owl_tool, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("saved")
    owl_tool("save", SHIPPED, out)
    return out


def _content(onto) -> dict:
    """Everything the toolkit reads: terms, labels, synonyms, categories, counts, indices,
    asserted parents, composites, stated exclusions (and the version built from them)."""
    return json.loads(onto.serialize("json"))


def test_shipped_ontology_is_owl2_dl(owl_tool):
    out = owl_tool("profile", SHIPPED)
    assert out.splitlines()[0] == "violations 0", out[:2000]


@pytest.mark.parametrize("name", ["lesion.rdf.owl", "lesion.owx", "lesion.ttl"])
def test_formats_the_toolkit_reads_give_identical_content(saved_formats, name):
    shipped = load_ontology(SHIPPED)
    loaded = load_ontology(saved_formats / name)
    assert _content(loaded) == _content(shipped)
    assert loaded.version == shipped.version
    assert loaded.stats() == shipped.stats()
    assert sorted(loaded.exclusive_pairs()) == sorted(shipped.exclusive_pairs())


@pytest.mark.parametrize(("name", "syntax"), [("lesion.ofn", "Functional"), ("lesion.omn", "Manchester")])
def test_functional_and_manchester_are_refused_with_the_formats_to_use(saved_formats, name, syntax):
    with pytest.raises(OntologyError, match="save as RDF/XML or OWL/XML"):
        load_ontology(saved_formats / name)
    result = subprocess.run(
        [sys.executable, "-m", "cli", "ontology", "stats", "--ontology", str(saved_formats / name)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and syntax in result.stderr
