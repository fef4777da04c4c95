"""Refuse XML that can expand: checked on the raw bytes before rdflib or owlready2 parse them.

An ontology file is RDF/XML or OWL/XML; neither needs a DTD. A DTD is where entity
expansion attacks live ("billion laughs": entities defined from entities, 10^9 copies
from a 1 kB file; external entities that read files or URLs). Older Protégé versions
wrote one harmless kind: entities naming namespace IRIs
(``<!ENTITY owl "http://www.w3.org/2002/07/owl#">``). So the rule is: a DTD may only
declare such plain internal entities (no entity reference inside, short, not external,
not parameter entities), and what their references expand to must stay within a small
multiple of the file. Anything else is refused naming the file and the declaration.

The DTD is read with expat itself (the parser rdflib uses), stopping at its end, so the
document body is never expanded here.
"""

from __future__ import annotations

import re
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path

from ontology.errors import LesanetError

MAX_ENTITY_VALUE = 512  # characters: a namespace IRI, not a document
MAX_ENTITIES = 256
MAX_EXPANSION = 4  # expanded entity text may add at most this many times the file's size


class UnsafeXMLError(LesanetError, ValueError):
    """XML that declares what could expand or reach outside the file."""


class _DoctypeEnd(Exception):
    """Raised by the handler at the end of the DTD: the body is not parsed."""


@dataclass
class _Doctype:
    entities: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    ended: bool = False


def check_xml(data: bytes, source: str | Path) -> None:
    """Raise :class:`UnsafeXMLError` unless ``data`` holds no DTD, or only plain internal entities."""
    if b"<!DOCTYPE" not in data[: 1 << 20] and b"<!ENTITY" not in data:
        return  # no DTD: nothing can expand (a DTD comes before the root element)
    doctype = _read_doctype(data)
    if doctype.problem:
        raise UnsafeXMLError(
            f"{source}: {doctype.problem}; an ontology file needs no DTD — save it again "
            "as RDF/XML or OWL/XML (Protégé: File → Save as)"
        )
    expanded = sum(
        len(value) * len(re.findall(rb"&" + re.escape(name.encode()) + rb";", data))
        for name, value in doctype.entities.items()
    )
    if expanded > MAX_EXPANSION * len(data):
        raise UnsafeXMLError(
            f"{source}: its entities would expand to {expanded:,} characters, over {MAX_EXPANSION}× "
            "the file; refused (an entity-expansion attack?)"
        )


def _read_doctype(data: bytes) -> _Doctype:
    doctype = _Doctype()
    parser = xml.parsers.expat.ParserCreate()
    # external entities are never fetched, and their declarations are refused below
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def refuse(problem: str) -> None:
        doctype.problem = problem
        raise _DoctypeEnd

    def on_entity(name, is_parameter, value, base, system_id, public_id, notation) -> None:
        if is_parameter:
            refuse(f"the DTD declares a parameter entity %{name}")
        if value is None:
            refuse(f"the DTD declares an external entity &{name}; ({system_id or public_id})")
        if "&" in value or "%" in value or "<" in value:
            refuse(f"the DTD's entity &{name}; is defined from other entities or markup (entity expansion)")
        if len(value) > MAX_ENTITY_VALUE:
            refuse(f"the DTD's entity &{name}; is {len(value):,} characters (at most {MAX_ENTITY_VALUE})")
        if len(doctype.entities) >= MAX_ENTITIES:
            refuse(f"the DTD declares more than {MAX_ENTITIES} entities")
        doctype.entities[name] = value

    def on_element_decl(name, model) -> None:
        refuse(f"the DTD declares element {name!r} (only namespace entities are accepted)")

    def on_attlist(element, attribute, kind, default, required) -> None:
        refuse(f"the DTD declares attributes of {element!r} (only namespace entities are accepted)")

    def on_doctype_start(name, system_id, public_id, has_internal_subset) -> None:
        if system_id or public_id:
            refuse(f"the DOCTYPE names an external DTD ({system_id or public_id})")

    def on_doctype_end() -> None:
        doctype.ended = True
        raise _DoctypeEnd

    def on_start(name, attributes) -> None:  # the root element: a DTD would have come before it
        raise _DoctypeEnd

    parser.EntityDeclHandler = on_entity
    parser.ElementDeclHandler = on_element_decl
    parser.AttlistDeclHandler = on_attlist
    parser.StartDoctypeDeclHandler = on_doctype_start
    parser.EndDoctypeDeclHandler = on_doctype_end
    parser.StartElementHandler = on_start
    try:
        parser.Parse(data, True)
    except _DoctypeEnd:
        pass
    except xml.parsers.expat.ExpatError:
        pass  # not well-formed before the root: the real parser names the syntax error
    return doctype
