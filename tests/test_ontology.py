"""The shipped OWL ontology, its networkx reasoning and the spreadsheet import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rdflib import Graph, Literal, URIRef
from rdflib.namespace import OWL, RDF, RDFS

from ontology import LESION, OntologyError, UnknownLabelError, load_ontology
from ontology.xlsx_import import import_xlsx

ROOT = Path(__file__).resolve().parents[1]

# Our exact count of inherited exclusive pairs among the 171 labels; docs/ontology.md
# explains the difference from the paper's "about 4,461".
EXCLUSIVE_PAIRS_171 = 4706


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=ROOT)


# ------------------------------------------------------------------ the paper's figures


def test_label_set_has_the_papers_categories(shipped_ontology):
    stats = shipped_ontology.stats()
    assert stats["labels"] == 171
    assert stats["categories"] == {"bodypart": 115, "type": 27, "attribute": 29}


def test_reduced_parent_child_pairs_among_labels_is_137(shipped_ontology):
    pairs = shipped_ontology.reduced_pairs()
    assert len(pairs) == 137
    labels = set(shipped_ontology.label_set())
    assert all(c in labels and p in labels for c, p in pairs)
    assert ("lung nodule", "lung") in pairs


def test_exclusive_pairs_close_to_paper(shipped_ontology):
    count = len(shipped_ontology.exclusive_pairs())
    assert count == EXCLUSIVE_PAIRS_171
    assert abs(count - 4461) / 4461 < 0.06


def test_composites_entail_exclusions(shipped_ontology):
    # lung nodule ⊥ lung mass and lung mass ≡ lung ⊓ mass, so no lung nodule is a mass
    assert "mass" in shipped_ontology.exclusive("lung nodule")
    assert "lung nodule" in shipped_ontology.exclusive("mass")
    assert "mass" not in shipped_ontology.exclusive("nodule")  # not exclusive by themselves


def test_hermit_agrees_with_composite_exclusions(tmp_path):
    from ontology.vocab import CATEGORY

    def add_probe(g):
        probe = LESION["probe_lung_nodule_mass"]
        g.add((probe, RDFS.label, Literal("probe")))
        g.add((probe, CATEGORY, Literal("type")))
        g.add((probe, RDFS.subClassOf, LESION.lung_nodule))
        g.add((probe, RDFS.subClassOf, LESION.mass))

    onto = load_ontology(_edited_copy(tmp_path, add_probe))
    assert "probe" in onto.unsatisfiable
    report = onto.check(reasoner=True)
    assert not any("disagree" in p for p in report.problems), report.problems


def test_no_unsatisfiable_class(shipped_ontology):
    assert shipped_ontology.stats()["unsatisfiable"] == []


def test_label_set_keeps_official_order(shipped_ontology, lesanet_data):
    official = json.loads((lesanet_data / "text_mined_labels_171_and_split.json").read_text())["term_list"]
    assert shipped_ontology.label_set("lesanet171") == official


# ------------------------------------------------------------------ reasoning


def test_lookup_by_name_synonym_and_iri(shipped_ontology):
    onto = shipped_ontology
    assert onto.term("renal").name == "kidney"
    assert onto.term("RLL").name == "right lower lobe"
    assert onto.term(str(LESION.kidney_cyst)).name == "kidney cyst"
    assert onto.term("Porta Hepatis").name == "porta Hepatis"


def test_unknown_label_suggests_close_matches(shipped_ontology):
    with pytest.raises(UnknownLabelError) as err:
        shipped_ontology.term("lung nodul")
    assert "lung nodule" in str(err.value)
    assert "lesion.owl" in str(err.value)


def test_expand_adds_ancestors_and_composites(shipped_ontology):
    expanded = shipped_ontology.expand(["kidney", "cyst"])
    assert {"kidney cyst", "kidney", "cyst", "abdomen", "retroperitoneum"} <= expanded
    assert "lung nodule" in shipped_ontology.expand(["right lower lobe", "nodule"])
    assert "mediastinum lymph node" in shipped_ontology.expand(["subcarinal lymph node"])
    # a composite's parts alone do not imply unrelated composites
    assert "kidney cyst" not in shipped_ontology.expand(["kidney", "nodule"])


def test_expand_is_closed(shipped_ontology):
    once = shipped_ontology.expand(["paraaortic", "lymph node", "liver", "mass"])
    assert shipped_ontology.expand(once) == once


def test_exclusions_are_inherited_and_symmetric(shipped_ontology):
    onto = shipped_ontology
    labels = onto.label_set()
    matrix = onto.exclusive_matrix(labels)
    assert (matrix == matrix.T).all()
    assert not matrix.diagonal().any()
    # the paper's rule on one stated pair: every descendant of a is exclusive with every descendant of b
    for a, b in sorted(onto.stated_exclusions)[:40]:
        for x in onto.descendants(a) | {a}:
            assert onto.descendants(b) | {b} <= onto.exclusive(x)


def test_no_term_is_exclusive_with_its_ancestor(shipped_ontology):
    onto = shipped_ontology
    for name in onto.terms:
        assert not (onto.ancestors(name) & onto.exclusive(name)), name


def test_sort_specific_first(shipped_ontology):
    ordered = shipped_ontology.sort_specific_first(["chest", "lung nodule", "lung"])
    assert ordered == ["lung nodule", "lung", "chest"]


# ------------------------------------------------------------------ files and formats


def test_round_trip_through_owlready2_and_rdflib(shipped_ontology, tmp_path):
    import owlready2

    world = owlready2.World()
    onto = world.get_ontology((ROOT / "ontology" / "lesion.owl").as_uri()).load()
    assert len(list(onto.classes())) >= 343
    saved = tmp_path / "from_owlready.owl"
    onto.save(file=str(saved), format="rdfxml")
    world.close()
    again = load_ontology(saved)
    assert again.stats()["exclusive_pairs"] == shipped_ontology.stats()["exclusive_pairs"]

    turtle = tmp_path / "lesion.ttl"
    turtle.write_text(shipped_ontology.serialize("ttl"), encoding="utf-8")
    from_ttl = load_ontology(turtle)
    original = {k: v for k, v in shipped_ontology.stats().items() if k != "version"}
    assert {k: v for k, v in from_ttl.stats().items() if k != "version"} == original


OWL_XML = """<?xml version="1.0"?>
<Ontology xmlns="http://www.w3.org/2002/07/owl#" xml:base="https://w3id.org/lesanet/lesion"
     xmlns:rdfs="http://www.w3.org/2000/01/rdf-schema#"
     ontologyIRI="https://w3id.org/lesanet/lesion">
  <Prefix name="owl" IRI="http://www.w3.org/2002/07/owl#"/>
  <Prefix name="rdfs" IRI="http://www.w3.org/2000/01/rdf-schema#"/>
  <Declaration><Class IRI="https://w3id.org/lesanet/lesion#lung"/></Declaration>
  <Declaration><Class IRI="https://w3id.org/lesanet/lesion#liver"/></Declaration>
  <Declaration><Class IRI="https://w3id.org/lesanet/lesion#lung_nodule"/></Declaration>
  <Declaration><AnnotationProperty IRI="https://w3id.org/lesanet/lesion#category"/></Declaration>
  <SubClassOf><Class IRI="https://w3id.org/lesanet/lesion#lung_nodule"/><Class IRI="https://w3id.org/lesanet/lesion#lung"/></SubClassOf>
  <DisjointClasses><Class IRI="https://w3id.org/lesanet/lesion#lung"/><Class IRI="https://w3id.org/lesanet/lesion#liver"/></DisjointClasses>
  <AnnotationAssertion><AnnotationProperty abbreviatedIRI="rdfs:label"/><IRI>https://w3id.org/lesanet/lesion#lung</IRI><Literal>lung</Literal></AnnotationAssertion>
  <AnnotationAssertion><AnnotationProperty abbreviatedIRI="rdfs:label"/><IRI>https://w3id.org/lesanet/lesion#liver</IRI><Literal>liver</Literal></AnnotationAssertion>
  <AnnotationAssertion><AnnotationProperty abbreviatedIRI="rdfs:label"/><IRI>https://w3id.org/lesanet/lesion#lung_nodule</IRI><Literal>lung nodule</Literal></AnnotationAssertion>
  <AnnotationAssertion><AnnotationProperty IRI="https://w3id.org/lesanet/lesion#category"/><IRI>https://w3id.org/lesanet/lesion#lung</IRI><Literal>bodypart</Literal></AnnotationAssertion>
  <AnnotationAssertion><AnnotationProperty IRI="https://w3id.org/lesanet/lesion#category"/><IRI>https://w3id.org/lesanet/lesion#liver</IRI><Literal>bodypart</Literal></AnnotationAssertion>
  <AnnotationAssertion><AnnotationProperty IRI="https://w3id.org/lesanet/lesion#category"/><IRI>https://w3id.org/lesanet/lesion#lung_nodule</IRI><Literal>type</Literal></AnnotationAssertion>
</Ontology>
"""


def test_loads_owl_xml_as_protege_saves_it(tmp_path):
    path = tmp_path / "small.owx"
    path.write_text(OWL_XML, encoding="utf-8")
    onto = load_ontology(path)
    assert set(onto.terms) == {"lung", "liver", "lung nodule"}
    assert onto.ancestors("lung nodule") == {"lung"}
    assert onto.exclusive("lung nodule") == {"liver"}


def _edited_copy(tmp_path: Path, edit) -> Path:
    graph = Graph()
    graph.parse(ROOT / "ontology" / "lesion.owl", format="xml")
    edit(graph)
    path = tmp_path / "edited.ttl"
    graph.serialize(path, format="turtle")
    return path


def test_header_has_version_iri_and_dcterms_metadata(shipped_ontology):
    from rdflib.namespace import DCTERMS

    from ontology.vocab import ONTOLOGY_IRI

    g = shipped_ontology.rdf
    assert shipped_ontology.declared_version_iri == shipped_ontology.version_iri
    assert shipped_ontology.version_iri.endswith(shipped_ontology.content_digest)
    for prop in (DCTERMS.title, DCTERMS.description, DCTERMS.license, DCTERMS.creator):
        assert g.value(ONTOLOGY_IRI, prop) is not None, prop
    sources = " ".join(map(str, g.objects(ONTOLOGY_IRI, DCTERMS.source)))
    assert "lesion_ontology_181022.xlsx" in sources and "RadLex 3.15" in sources
    assert g.value(LESION.Lesion, URIRef("http://www.w3.org/2004/02/skos/core#definition")) is not None


def test_every_annotation_property_used_is_declared(shipped_ontology):
    g = shipped_ontology.rdf
    builtin = {RDFS.label, RDFS.comment, OWL.versionInfo}
    structural = {OWL.versionIRI, OWL.disjointWith, OWL.equivalentClass, OWL.intersectionOf, RDFS.subClassOf}
    declared = set(g.subjects(RDF.type, OWL.AnnotationProperty))
    used = {p for s, p, o in g if s != URIRef("https://w3id.org/lesanet/lesion") and p not in structural}
    used -= {RDF.type, RDF.first, RDF.rest}
    assert used - builtin <= declared, sorted(used - builtin - declared)


def test_version_digest_ignores_header_and_follows_content(tmp_path):
    from rdflib.namespace import SKOS

    from ontology.vocab import ONTOLOGY_IRI

    shipped = load_ontology()
    header_only = load_ontology(_edited_copy(tmp_path, lambda g: g.set((ONTOLOGY_IRI, RDFS.comment, Literal("x")))))
    assert header_only.version == shipped.version
    (tmp_path / "b").mkdir()
    synonym = load_ontology(
        _edited_copy(tmp_path / "b", lambda g: g.add((LESION.kidney, SKOS.altLabel, Literal("nephros"))))
    )
    assert synonym.version != shipped.version
    assert synonym.declared_version_iri == shipped.version_iri != synonym.version_iri  # stale header


@pytest.mark.parametrize(
    ("text", "syntax"),
    [
        ("Prefix(:=<https://w3id.org/lesanet/lesion#>)\nOntology(<https://w3id.org/lesanet/lesion>)\n", "Functional"),
        (
            "Prefix: lesion: <https://w3id.org/lesanet/lesion#>\nOntology: <https://w3id.org/lesanet/lesion>\n",
            "Manchester",
        ),
    ],
)
def test_functional_and_manchester_syntax_are_refused_in_one_line(tmp_path, text, syntax):
    path = tmp_path / "lesion.ofn"
    path.write_text(text)
    result = run_cli("ontology", "stats", "--ontology", str(path))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert syntax in result.stderr and "save as RDF/XML or OWL/XML" in result.stderr


def test_check_finds_unsatisfiable_class_and_hermit_agrees(tmp_path):
    # re-state the spreadsheet's contradiction: rectum is below both abdomen and pelvis
    path = _edited_copy(tmp_path, lambda g: g.add((LESION.abdomen, OWL.disjointWith, LESION.pelvis)))
    onto = load_ontology(path)
    assert {"rectum", "sigmoid colon"} <= set(onto.unsatisfiable)
    report = onto.check(reasoner=True)
    assert not report.ok
    assert not any("disagree" in p for p in report.problems), report.problems
    assert any("'rectum' is unsatisfiable" in p for p in report.problems)


def test_shipped_ontology_passes_hermit_check(shipped_ontology):
    report = shipped_ontology.check(reasoner=True)
    assert report.ok, report.lines()
    assert any("HermiT: consistent=True, 0 unsatisfiable" in n for n in report.notes)


def test_cycle_is_a_clear_error(tmp_path):
    path = _edited_copy(tmp_path, lambda g: g.add((LESION.chest, RDFS.subClassOf, LESION.lung)))
    with pytest.raises(OntologyError, match=r"edited\.ttl: subclass cycle"):
        load_ontology(path)
    result = run_cli("ontology", "check", "--no-reasoner", "--ontology", str(path))
    assert result.returncode == 1
    assert "cycle" in result.stdout and "Traceback" not in result.stderr


def test_malformed_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.owl"
    bad.write_text("<rdf:RDF this is not xml", encoding="utf-8")
    with pytest.raises(OntologyError, match="broken.owl"):
        load_ontology(bad)


def test_dangling_reference_is_reported(tmp_path):
    path = _edited_copy(tmp_path, lambda g: g.add((LESION.lung, OWL.disjointWith, URIRef(LESION["no_such_term"]))))
    report = load_ontology(path).check(reasoner=False)
    assert any("dangling" in p and "no_such_term" in p for p in report.problems)


# ------------------------------------------------------------------ spreadsheet import


def test_import_is_deterministic_and_resolves_defects(lesanet_data, tmp_path):
    xlsx = lesanet_data / "lesion_ontology_181022.xlsx"
    labels = lesanet_data / "text_mined_labels_171_and_split.json"
    first = import_xlsx(xlsx, labels)
    second = import_xlsx(xlsx, labels)
    assert first.owl_xml == second.owl_xml
    kinds = [d.kind for d in first.defects]
    undefined = [d.item for d in first.defects if d.kind == "undefined name"]
    assert len(undefined) == 14  # 11 in the hierarchy columns + 3 only in exclusions
    assert {"artery", "vein", "neoplasm", "periportal lymph node"} <= set(undefined)
    assert kinds.count("unmirrored parent/child") > 0
    conflicts = {d.item for d in first.defects if d.kind == "exclusion contradicts hierarchy"}
    assert "abdomen ⊥ pelvis" in conflicts
    out = tmp_path / "imported.owl"
    out.write_text(first.owl_xml, encoding="utf-8")
    imported = load_ontology(out)
    assert imported.stats()["unsatisfiable"] == []
    assert imported.terms["kidney cyst"].composite_of == ("cyst", "kidney")


def test_import_rejects_a_sheet_without_the_columns(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(["term", "class"])
    book.active.append(["lung", "bodypart"])
    path = tmp_path / "bad.xlsx"
    book.save(path)
    with pytest.raises(OntologyError, match=r"bad\.xlsx: header row lacks column"):
        import_xlsx(path)
    result = run_cli("ontology", "import-xlsx", str(path), "-o", str(tmp_path / "x.owl"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "bad.xlsx" in result.stderr
    assert not (tmp_path / "x.owl").exists()


# ------------------------------------------------------------------ CLI


def test_cli_stats_json():
    result = run_cli("ontology", "stats", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["terms"] == 343 and stats["labels"] == 171
    assert stats["categories"] == {"bodypart": 115, "type": 27, "attribute": 29}
    assert stats["parent_child_pairs"] == 137
    assert stats["exclusive_pairs"] == EXCLUSIVE_PAIRS_171
    assert stats["unsatisfiable"] == []


def test_cli_expand_exclusive_export(tmp_path):
    expand = run_cli("ontology", "expand", "renal", "cyst", "--json")
    assert expand.returncode == 0 and json.loads(expand.stdout)[0] == "kidney cyst"
    exclusive = run_cli("ontology", "exclusive", "right lower lobe", "--label-set", "lesanet171")
    assert "right upper lobe" in exclusive.stdout.splitlines()
    out = tmp_path / "o.json"
    assert run_cli("ontology", "export", "--format", "json", "-o", str(out)).returncode == 0
    assert len(json.loads(out.read_text())["terms"]) == 343


def test_cli_errors_and_usage():
    unknown = run_cli("ontology", "expand", "lung nodul")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("lesanet: error: unknown label") and "Traceback" not in unknown.stderr
    usage = run_cli("ontology", "export", "--format", "pdf")
    assert usage.returncode == 2
    assert run_cli("ontology", "stats", "--help").returncode == 0
