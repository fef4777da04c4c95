"""Hostile ontology files: entity expansion and DTDs refused fast, bad literals named with
file and class, and tools refuse an ontology that `ontology check` rejects unless --unchecked."""

from __future__ import annotations

import time
import typing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rdflib import Graph, Literal, URIRef

from ontology import OntologyError, load_ontology
from ontology.safexml import UnsafeXMLError, check_xml
from ontology.vocab import LESION, OWL

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (ROOT / "ontology" / "lesion.owl").read_text(encoding="utf-8")
RDF_START = SHIPPED.index("<rdf:RDF")


def _with_dtd(subset: str, body_edit=lambda text: text) -> str:
    """The shipped ontology with an internal DTD subset before its root element."""
    return SHIPPED[:RDF_START] + f"<!DOCTYPE rdf:RDF [\n{subset}\n]>\n" + body_edit(SHIPPED[RDF_START:])


def _laughs(levels: int = 10) -> str:
    subset = '<!ENTITY lol0 "lol">\n' + "\n".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, levels)
    )
    return _with_dtd(
        subset,
        lambda body: body.replace(
            "<rdfs:label>LesaNet lesion ontology</rdfs:label>", f"<rdfs:label>&lol{levels - 1};</rdfs:label>", 1
        ),
    )


HOSTILE = {
    "billion laughs": (_laughs(), "defined from other entities"),
    "external entity": (_with_dtd('<!ENTITY passwd SYSTEM "file:///etc/passwd">'), "external entity &passwd;"),
    "parameter entity": (_with_dtd("<!ENTITY % p \"<!ENTITY x 'y'>\"> %p;"), "parameter entity %p"),
    "external DTD": (
        SHIPPED[:RDF_START] + '<!DOCTYPE rdf:RDF SYSTEM "http://127.0.0.1:9/x.dtd">\n' + SHIPPED[RDF_START:],
        "external DTD",
    ),
    "element declaration": (_with_dtd("<!ELEMENT rdf:RDF ANY>"), "declares element"),
    "quadratic blowup": (
        _with_dtd(
            f'<!ENTITY a "{"x" * 500}">',
            lambda body: body.replace(
                "<rdfs:label>LesaNet lesion ontology</rdfs:label>", f"<rdfs:label>{'&a;' * 20_000}</rdfs:label>", 1
            ),
        ),
        "would expand",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_xml_is_refused_fast_naming_the_file(tmp_path, case):
    text, reason = HOSTILE[case]
    path = tmp_path / "hostile.owl"
    path.write_text(text, encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(OntologyError, match=f"{path}: .*{reason}"):
        load_ontology(path)
    assert time.perf_counter() - started < 5


def test_billion_laughs_through_the_cli_is_one_line_and_exit_1(tmp_path, capsys):
    from cli import main

    path = tmp_path / "laughs.owl"
    path.write_text(_laughs(), encoding="utf-8")
    assert main(["ontology", "check", "--no-reasoner", "--ontology", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "entity expansion" in err and "Traceback" not in err


def test_namespace_entities_as_old_protege_wrote_them_still_load(tmp_path, shipped_ontology):
    xsd = "http://www.w3.org/2001/XMLSchema#"
    text = _with_dtd(
        f'<!ENTITY owl "http://www.w3.org/2002/07/owl#">\n<!ENTITY xsd "{xsd}">',
        lambda body: body.replace(f'rdf:datatype="{xsd}integer"', 'rdf:datatype="&xsd;integer"'),
    )
    assert text.count("&xsd;integer") > 300
    path = tmp_path / "protege4.owl"
    path.write_text(text, encoding="utf-8")
    assert load_ontology(path).version == shipped_ontology.version


@pytest.mark.parametrize(
    ("prop", "value"), [("lesanetIndex", "3x3"), ("deeplesionOccurrences", "1e5"), ("lesanetIndex", "9" * 40)]
)
def test_a_bad_integer_literal_names_file_and_class(tmp_path, capsys, prop, value):
    from cli import main

    graph = Graph()
    graph.parse(ROOT / "ontology" / "lesion.owl", format="xml")
    graph.set((LESION.liver, LESION[prop], Literal(value, datatype=URIRef("http://www.w3.org/2001/XMLSchema#integer"))))
    path = tmp_path / "bad.ttl"
    graph.serialize(path, format="turtle")
    with pytest.raises(OntologyError, match=rf"{path}: class 'liver': lesion:{prop} '{value[:40]}' is not an integer"):
        load_ontology(path)
    assert main(["ontology", "stats", "--ontology", str(path)]) == 1
    err = capsys.readouterr().err
    assert "class 'liver'" in err and "Traceback" not in err and err.count("\n") == 1


@pytest.fixture()
def dangling(tmp_path) -> Path:
    graph = Graph()
    graph.parse(ROOT / "ontology" / "lesion.owl", format="xml")
    graph.add((LESION.lung, OWL.disjointWith, URIRef(LESION["no_such_term"])))
    path = tmp_path / "dangling.ttl"
    graph.serialize(path, format="turtle")
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["ontology", "expand", "renal cyst"],
        ["ontology", "exclusive", "lung"],
        ["textmine", "derivations", "--grep", "renal"],
    ],
)
def test_tools_refuse_an_ontology_that_check_rejects_unless_unchecked(dangling, capsys, argv):
    from cli import main

    assert main([*argv, "--ontology", str(dangling)]) == 1
    err = capsys.readouterr().err
    assert "fails `lesanet ontology check`" in err and "no_such_term" in err and "--unchecked" in err
    assert main([*argv, "--ontology", str(dangling), "--unchecked"]) == 0
    capsys.readouterr()


def test_check_and_stats_still_read_a_rejected_ontology(dangling, capsys):
    from cli import main

    assert main(["ontology", "check", "--no-reasoner", "--ontology", str(dangling)]) == 1
    assert "dangling" in capsys.readouterr().out
    assert main(["ontology", "stats", "--json", "--ontology", str(dangling)]) == 0


# ---------------------------------------------------------------------------- properties

# unencodable lone surrogates (typing.Literal: this module imports rdflib's Literal)
SURROGATES: tuple[typing.Literal["Cs"]] = ("Cs",)
entity_values = st.text(st.characters(blacklist_categories=SURROGATES, blacklist_characters='"'), max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), entity_values), max_size=6),
    st.lists(st.integers(0, 5), max_size=30),
)
def test_any_internal_subset_is_accepted_safely_or_refused(entities, references):
    subset = "\n".join(f'<!ENTITY {name} "{value}">' for name, value in entities)
    names = [name for name, _ in entities]
    body = "".join(f"&{names[i % len(names)]};" for i in references) if names else ""
    doc = f'<?xml version="1.0"?>\n<!DOCTYPE r [\n{subset}\n]>\n<r>{body}</r>\n'.encode()
    try:
        check_xml(doc, "doc.xml")
    except UnsafeXMLError as exc:
        assert str(exc).startswith("doc.xml: ")
    else:  # accepted: what expat expands stays small
        import xml.parsers.expat

        size = 0

        def text(data: str) -> None:
            nonlocal size
            size += len(data)

        parser = xml.parsers.expat.ParserCreate()
        parser.CharacterDataHandler = text
        try:
            parser.Parse(doc, True)
        except xml.parsers.expat.ExpatError:
            return  # not well-formed (e.g. an undefined entity): the real parser names it
        assert size <= 4 * len(doc) + 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_checked_without_another_exception(data):
    for doc in (data, b"<!DOCTYPE x [" + data, b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "' + data):
        try:
            check_xml(doc, "f")
        except UnsafeXMLError:
            pass
