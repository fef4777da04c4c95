"""One-off import of the LesaNet spreadsheet into the OWL ontology.

``lesion_ontology_181022.xlsx`` (one row per term) is read with openpyxl, its defects are
resolved by the decisions in ``xlsx_decisions.yaml`` and by two rules (parent/child
columns are merged; an exclusion that would make a term unsatisfiable is narrowed), and
the result is written as RDF/XML. The writer is hand-rolled on purpose: output order is
fixed (sorted by name), so the same input gives byte-identical output, which a generic
serializer iterating hash-ordered sets does not promise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import networkx as nx
import openpyxl
import yaml
from rdflib import Graph

from ontology.errors import OntologyError
from ontology.model import Ontology
from ontology.reasoning import (
    Pair,
    infer_composite_edges,
    ordered_pair,
    refine_exclusion,
    unsatisfiable_terms,
)
from ontology.vocab import (
    CATEGORIES,
    CATEGORY,
    LESANET_INDEX,
    LESION,
    LESION_ROOT,
    OCCURRENCES,
    ONTOLOGY_IRI,
    SOURCE_ID,
    STANDARD_ANNOTATION_PROPERTIES,
    iri_for_name,
    version_iri,
)

COLUMNS = ("id", "class", "term", "synonyms", "num_detected", "term_exclusive", "term_parents", "term_children")
OPTIONAL_COLUMNS = ("definition",)  # the 181022 sheet has none; a later sheet may


@dataclass
class SheetTerm:
    """One spreadsheet row (or a term defined by a decision)."""

    name: str
    category: str
    synonyms: list[str]
    count: int
    source_id: int | None
    row: int | None  # spreadsheet row number, None for defined terms
    note: str = ""
    definition: str = ""


@dataclass
class Defect:
    """A spreadsheet defect and how the import resolved it."""

    kind: str
    item: str
    decision: str

    def line(self) -> str:
        return f"defect [{self.kind}] {self.item}: {self.decision}"


@dataclass
class ImportResult:
    terms: dict[str, SheetTerm]
    edges: set[Pair]  # (child, parent), asserted after merging the two columns
    disjoint: set[Pair]  # stated exclusions written to the OWL, after narrowing
    composites: dict[str, tuple[str, ...]]
    lesanet_order: list[str]
    defects: list[Defect] = field(default_factory=list)
    version_info: str = ""
    header: dict = field(default_factory=dict)
    owl_xml: str = ""

    def defect_lines(self) -> list[str]:
        return [d.line() for d in self.defects]

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for d in self.defects:
            kinds[d.kind] = kinds.get(d.kind, 0) + 1
        found = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
        return (
            f"{len(self.terms)} terms, {len(self.edges)} subclass axioms, "
            f"{len(self.disjoint)} disjointness axioms, {len(self.composites)} defined composites; "
            f"defects resolved: {found}"
        )

    def report_markdown(self) -> str:
        lines = ["# Spreadsheet import report", "", self.summary(), ""]
        current = None
        for d in sorted(self.defects, key=lambda d: (d.kind, d.item)):
            if d.kind != current:
                lines += ["", f"## {d.kind}", "", "| item | decision |", "|---|---|"]
                current = d.kind
            lines.append(f"| {d.item} | {d.decision} |")
        return "\n".join(lines) + "\n"


def _split_names(cell: object) -> list[str]:
    if cell is None:
        return []
    return [part.strip() for part in str(cell).split("|") if part.strip()]


def _load_decisions() -> dict:
    text = Path(__file__).with_name("xlsx_decisions.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def read_sheet(path: str | Path) -> tuple[dict[str, SheetTerm], dict[str, dict[str, list[str]]]]:
    """Read the spreadsheet: terms by name, and each term's raw relation columns."""
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except FileNotFoundError:
        raise OntologyError(f"{path}: file not found") from None
    except Exception as exc:  # openpyxl raises many types for a non-xlsx file
        raise OntologyError(f"{path}: not a readable .xlsx workbook ({exc})") from None
    sheet = workbook.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    header = next(rows, None)
    names_in_header = [str(c).strip() if c is not None else "" for c in (header or ())]
    missing = [c for c in COLUMNS if c not in names_in_header]
    if missing:
        raise OntologyError(f"{path}: header row lacks column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    col = {c: names_in_header.index(c) for c in (*COLUMNS, *OPTIONAL_COLUMNS) if c in names_in_header}
    terms: dict[str, SheetTerm] = {}
    relations: dict[str, dict[str, list[str]]] = {}
    for row_number, values in enumerate(rows, start=2):
        if values is None or all(v is None for v in values):
            continue
        values = tuple(values) + (None,) * (len(names_in_header) - len(values))
        name = str(values[col["term"]] or "").strip()
        where = f"{path}: row {row_number}"
        if not name:
            raise OntologyError(f"{where}: empty 'term' cell")
        if name in terms:
            raise OntologyError(f"{where}: term {name!r} already defined in row {terms[name].row}")
        category = str(values[col["class"]] or "").strip().lower()
        if category not in CATEGORIES:
            raise OntologyError(f"{where}: class {category!r} of {name!r} is not one of {', '.join(CATEGORIES)}")
        count_cell = values[col["num_detected"]]
        try:
            count = int(count_cell) if count_cell is not None else 0
        except (TypeError, ValueError):
            raise OntologyError(f"{where}: num_detected {count_cell!r} of {name!r} is not an integer") from None
        source_cell = values[col["id"]]
        terms[name] = SheetTerm(
            name=name,
            category=category,
            synonyms=_split_names(values[col["synonyms"]]),
            count=count,
            source_id=int(source_cell) if isinstance(source_cell, (int, float)) else None,
            row=row_number,
            definition=str(values[col["definition"]] or "").strip() if "definition" in col else "",
        )
        relations[name] = {
            key: _split_names(values[col[key]]) for key in ("term_exclusive", "term_parents", "term_children")
        }
    workbook.close()
    if not terms:
        raise OntologyError(f"{path}: no term rows")
    return terms, relations


def _read_label_order(path: str | Path | None, terms: dict[str, SheetTerm]) -> list[str]:
    if path is None:
        return []
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        order = data["term_list"]
    except FileNotFoundError:
        raise OntologyError(f"{path}: file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise OntologyError(f"{path}: expected a JSON object with 'term_list' ({exc})") from None
    unknown = [n for n in order if n not in terms]
    if unknown:
        raise OntologyError(f"{path}: term_list names not in the spreadsheet: {', '.join(unknown[:5])}")
    return list(order)


def _resolve_names(
    terms: dict[str, SheetTerm],
    relations: dict[str, dict[str, list[str]]],
    decisions: dict,
    defects: list[Defect],
) -> dict[str, str]:
    """Map every referenced name to a term, defining terms as decided. Returns the mapping."""
    referenced: dict[str, list[str]] = {}
    for owner, columns in relations.items():
        for column, names in columns.items():
            for name in names:
                if name not in terms:
                    referenced.setdefault(name, []).append(f"{column} of {owner!r}")
    mapping: dict[str, str] = {}
    rules = decisions.get("undefined_names", {})
    for name in sorted(referenced):
        where = "; ".join(sorted(set(referenced[name]))[:4])
        rule = rules.get(name)
        if rule is None:
            raise OntologyError(
                f"spreadsheet references {name!r} ({where}) but has no row for it and "
                "ontology/xlsx_decisions.yaml says nothing about it: add a decision (map_to or define)"
            )
        if "map_to" in rule:
            target = rule["map_to"]
            if target not in terms:
                raise OntologyError(f"xlsx_decisions.yaml: {name!r} maps to unknown term {target!r}")
            mapping[name] = target
            defects.append(Defect("undefined name", name, f"mapped to {target!r}: {rule['why']} (used in {where})"))
        else:
            category = rule["define"]
            terms[name] = SheetTerm(name, category, [name], 0, None, None, note=rule["why"])
            mapping[name] = name
            defects.append(
                Defect("undefined name", name, f"defined as a {category} term: {rule['why']} (used in {where})")
            )
    return mapping


def _dedupe_synonyms(terms: dict[str, SheetTerm], defects: list[Defect]) -> None:
    owners: dict[str, list[str]] = {}
    for term in terms.values():
        seen: list[str] = []
        for synonym in term.synonyms:
            if synonym.lower() not in {s.lower() for s in seen}:
                seen.append(synonym)
        if len(seen) != len(term.synonyms):
            defects.append(Defect("repeated synonym", term.name, "synonym listed twice in its own row; kept once"))
        term.synonyms = seen
        for synonym in seen:
            owners.setdefault(synonym.lower(), []).append(term.name)
    for synonym, names in sorted(owners.items()):
        if len(names) < 2:
            continue
        keep = next((n for n in names if n.lower() == synonym), None)
        if keep is None:
            continue  # ambiguous without an owner of that exact name: keep on all
        for name in names:
            if name != keep:
                terms[name].synonyms = [s for s in terms[name].synonyms if s.lower() != synonym]
                defects.append(
                    Defect("ambiguous synonym", f"{synonym!r} of {name!r}", f"dropped: it is the name of term {keep!r}")
                )


def _hierarchy(
    terms: dict[str, SheetTerm],
    relations: dict[str, dict[str, list[str]]],
    mapping: dict[str, str],
    decisions: dict,
    defects: list[Defect],
) -> set[Pair]:
    from_parents = {(t, mapping.get(p, p)) for t, cols in relations.items() for p in cols["term_parents"]}
    from_children = {(mapping.get(c, c), t) for t, cols in relations.items() for c in cols["term_children"]}
    for child, parent in sorted(from_parents ^ from_children):
        only = "term_parents" if (child, parent) in from_parents else "term_children"
        defects.append(
            Defect(
                "unmirrored parent/child",
                f"{child} ⊑ {parent}",
                f"only in the {only} column; kept (union of both columns)",
            )
        )
    edges = {(c, p) for c, p in from_parents | from_children if c != p}
    for child, rule in sorted((decisions.get("extra_parents") or {}).items()):
        for parent in rule["parents"]:
            if child not in terms or parent not in terms:
                raise OntologyError(f"xlsx_decisions.yaml: extra parent {child!r} ⊑ {parent!r} names an unknown term")
            if (child, parent) not in edges:
                edges.add((child, parent))
                defects.append(Defect("missing parent", f"{child} ⊑ {parent}", f"added: {rule['why']}"))
    for child, parent in sorted(from_parents | from_children):
        if child == parent:
            defects.append(Defect("self parent", child, "a term listed as its own parent; dropped"))
    return edges


def _find_composites(
    terms: dict[str, SheetTerm], graph: nx.DiGraph, decisions: dict, defects: list[Defect]
) -> dict[str, tuple[str, ...]]:
    """Terms named "<modifier> <head>" whose two direct parents are the modifier and the head."""
    rules = decisions.get("composites", {})
    not_defined: dict = rules.get("not_defined") or {}
    also_defined: dict = rules.get("also_defined") or {}
    composites: dict[str, tuple[str, ...]] = {}
    for name in sorted(terms):
        parents = set(graph.successors(name))
        direct = {p for p in parents if not any(p in nx.descendants(graph, q) for q in parents if q != p)}
        if len(direct) != 2:
            continue
        for head in direct:
            (modifier,) = direct - {head}
            words = {modifier.lower(), *(s.lower() for s in terms[modifier].synonyms)}
            if name.lower().endswith(" " + head.lower()) and name.lower()[: -len(head) - 1] in words:
                if name in not_defined:
                    defects.append(Defect("composite left undefined", name, not_defined[name]))
                else:
                    composites[name] = tuple(sorted((modifier, head)))
                break
    for name, rule in sorted(also_defined.items()):
        parts = tuple(sorted(rule["parts"]))
        missing = [p for p in (name, *parts) if p not in terms]
        if missing:
            raise OntologyError(f"xlsx_decisions.yaml: composite {name!r} names unknown term(s) {missing}")
        composites[name] = parts
    return composites


def _narrow_exclusions(graph: nx.DiGraph, stated: set[Pair], defects: list[Defect]) -> set[Pair]:
    result = set(stated)
    # Narrowing one exclusion can leave a term below both sides of another: repeat.
    while unsatisfiable := unsatisfiable_terms(graph, result):
        _narrow_once(graph, result, unsatisfiable, defects)
    return result


def _narrow_once(graph: nx.DiGraph, result: set[Pair], unsatisfiable: dict[str, Pair], defects: list[Defect]) -> None:
    for a, b in sorted(set(unsatisfiable.values())):
        result.discard((a, b))
        narrowed = refine_exclusion(graph, a, b)
        result |= set(narrowed)
        victims = sorted(t for t, pair in unsatisfiable.items() if pair == (a, b))
        defects.append(
            Defect(
                "exclusion contradicts hierarchy",
                f"{a} ⊥ {b}",
                f"would make {', '.join(victims)} unsatisfiable (below both sides); replaced by "
                f"{len(narrowed)} narrower exclusion(s) that keep every inherited pair whose subtrees do not overlap",
            )
        )


def import_xlsx(xlsx: str | Path, labels_json: str | Path | None = None) -> ImportResult:
    """Read the spreadsheet, resolve its defects and render the OWL ontology."""
    decisions = _load_decisions()
    terms, relations = read_sheet(xlsx)
    defects: list[Defect] = []
    order = _read_label_order(labels_json, terms)
    mapping = _resolve_names(terms, relations, decisions, defects)
    _dedupe_synonyms(terms, defects)
    edges = _hierarchy(terms, relations, mapping, decisions, defects)

    graph = nx.DiGraph()
    graph.add_nodes_from(terms)
    graph.add_edges_from(edges)
    if not nx.is_directed_acyclic_graph(graph):
        cycle = " ⊑ ".join(c for c, _ in nx.find_cycle(graph))
        raise OntologyError(f"{xlsx}: the parent columns form a cycle: {cycle}")

    iris: dict[str, str] = {}
    for name in terms:
        clash = iris.setdefault(str(iri_for_name(name)), name)
        if clash != name:
            raise OntologyError(f"{xlsx}: terms {clash!r} and {name!r} would share the IRI {iri_for_name(name)}")

    composites = _find_composites(terms, graph, decisions, defects)
    reasoned = graph.copy()
    infer_composite_edges(reasoned, composites)

    stated: set[Pair] = set()
    for owner, cols in relations.items():
        for other in cols["term_exclusive"]:
            other = mapping.get(other, other)
            if other == owner:
                defects.append(Defect("self exclusion", owner, "a term listed as exclusive with itself; dropped"))
                continue
            stated.add(ordered_pair(owner, other))
    disjoint = _narrow_exclusions(reasoned, stated, defects)

    result = ImportResult(
        terms=terms,
        edges=edges,
        disjoint=disjoint,
        composites=composites,
        lesanet_order=order,
        defects=defects,
        version_info=str(decisions.get("version_info", "")),
        header=dict(decisions.get("header") or {}),
    )
    result.owl_xml = render_owl_xml(result, source=Path(xlsx).name)
    return result


def _content_version_iri(body_xml: str, version_info: str) -> str:
    """The versionIRI of a rendered body: its content digest, read back the way users load it."""
    digest = Ontology(Graph().parse(data=body_xml, format="xml"), "the import").content_digest
    return str(version_iri(version_info, digest))


# --------------------------------------------------------------------------- RDF/XML writer

_PREFIXES = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "owl": "http://www.w3.org/2002/07/owl#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "dcterms": "http://purl.org/dc/terms/",
    "lesion": str(LESION),
}
_XSD_INTEGER = _PREFIXES["xsd"] + "integer"


def _local(prop: object) -> str:
    return "lesion:" + str(prop)[len(str(LESION)) :]


def render_owl_xml(result: ImportResult, source: str) -> str:
    """RDF/XML in a fixed order (Protégé and the OWL API open it; OWL 2 DL)."""
    body = _render_body(result)
    header = _render_header(result, source, version_iri=_content_version_iri(_document(body, []), result.version_info))
    return _document(body, header)


def _document(body: list[str], header: list[str]) -> str:
    out: list[str] = ['<?xml version="1.0" encoding="utf-8"?>', "<rdf:RDF"]
    out += [f'    xmlns:{p}="{iri}"' for p, iri in _PREFIXES.items()]
    out[-1] += ">"
    return "\n".join(out + header + body + ["</rdf:RDF>"]) + "\n"


def _render_header(result: ImportResult, source: str, version_iri: str) -> list[str]:
    """owl:Ontology with its versionIRI and dcterms metadata (from xlsx_decisions.yaml)."""
    info = result.header
    out = [
        f"  <owl:Ontology rdf:about={quoteattr(str(ONTOLOGY_IRI))}>",
        f"    <owl:versionIRI rdf:resource={quoteattr(version_iri)}/>",
        f"    <owl:versionInfo>{escape(result.version_info)}</owl:versionInfo>",
        f"    <rdfs:label>{escape(str(info.get('title', 'LesaNet lesion ontology')))}</rdfs:label>",
    ]
    for key in ("title", "description", "creator", "rights"):
        if info.get(key):
            out.append(f"    <dcterms:{key}>{escape(' '.join(str(info[key]).split()))}</dcterms:{key}>")
    if info.get("license"):
        out.append(f"    <dcterms:license rdf:resource={quoteattr(str(info['license']))}/>")
    for cited in [
        f"{source} (the LesaNet release, github.com/rsummers11/CADLab, LesaNet/program_data)",
        *info.get("sources", []),
    ]:
        out.append(f"    <dcterms:source>{escape(str(cited))}</dcterms:source>")
    return out + ["  </owl:Ontology>"]


def _render_body(result: ImportResult) -> list[str]:
    out: list[str] = []
    annotation_props = [
        (CATEGORY, "category", "bodypart, type or attribute"),
        (OCCURRENCES, "DeepLesion occurrences", "times the term was found in DeepLesion report sentences"),
        (LESANET_INDEX, "LesaNet label index", "position in the official 171-label term_list (from 0)"),
        (SOURCE_ID, "spreadsheet id", "the obsolete id column of lesion_ontology_181022.xlsx"),
    ]
    for prop, label, comment in annotation_props:
        out += [
            f"  <owl:AnnotationProperty rdf:about={quoteattr(str(prop))}>",
            f"    <rdfs:label>{escape(label)}</rdfs:label>",
            f"    <rdfs:comment>{escape(comment)}</rdfs:comment>",
            "  </owl:AnnotationProperty>",
        ]
    # OWL 2 DL: standard vocabularies' annotation properties must be declared too.
    out += [f"  <owl:AnnotationProperty rdf:about={quoteattr(str(prop))}/>" for prop in STANDARD_ANNOTATION_PROPERTIES]
    out += [
        f"  <owl:Class rdf:about={quoteattr(str(LESION_ROOT))}>",
        "    <rdfs:label>Lesion</rdfs:label>",
        *(
            [f"    <skos:definition>{escape(str(result.header['root_definition']))}</skos:definition>"]
            if result.header.get("root_definition")
            else []
        ),
        "    <rdfs:comment>Root of the lesion classes; every term is below it.</rdfs:comment>",
        "  </owl:Class>",
    ]
    index = {name: i for i, name in enumerate(result.lesanet_order)}
    parents: dict[str, list[str]] = {}
    for child, parent in result.edges:
        parents.setdefault(child, []).append(parent)
    disjoint: dict[str, list[str]] = {}
    for a, b in result.disjoint:
        disjoint.setdefault(a, []).append(b)
    for name in sorted(result.terms, key=lambda n: (str(iri_for_name(n)), n)):
        term = result.terms[name]
        out.append(f"  <owl:Class rdf:about={quoteattr(str(iri_for_name(name)))}>")
        out.append(f"    <rdfs:label>{escape(name)}</rdfs:label>")
        for synonym in sorted(s for s in term.synonyms if s != name):
            out.append(f"    <skos:altLabel>{escape(synonym)}</skos:altLabel>")
        if term.definition:
            out.append(f"    <skos:definition>{escape(term.definition)}</skos:definition>")
        out.append(f"    <{_local(CATEGORY)}>{term.category}</{_local(CATEGORY)}>")
        out.append(f'    <{_local(OCCURRENCES)} rdf:datatype="{_XSD_INTEGER}">{term.count}</{_local(OCCURRENCES)}>')
        if name in index:
            out.append(
                f'    <{_local(LESANET_INDEX)} rdf:datatype="{_XSD_INTEGER}">{index[name]}</{_local(LESANET_INDEX)}>'
            )
        if term.source_id is not None:
            out.append(f'    <{_local(SOURCE_ID)} rdf:datatype="{_XSD_INTEGER}">{term.source_id}</{_local(SOURCE_ID)}>')
        if term.note:
            out.append(
                f"    <rdfs:comment>Not a row of the spreadsheet; defined on import: {escape(term.note)}</rdfs:comment>"
            )
        above: list[str | None] = [*sorted(parents.get(name, []))] or [None]
        for parent_name in above:
            target = LESION_ROOT if parent_name is None else iri_for_name(parent_name)
            out.append(f"    <rdfs:subClassOf rdf:resource={quoteattr(str(target))}/>")
        if name in result.composites:
            out += [
                "    <owl:equivalentClass>",
                "      <owl:Class>",
                '        <owl:intersectionOf rdf:parseType="Collection">',
            ]
            out += [
                f"          <rdf:Description rdf:about={quoteattr(str(iri_for_name(p)))}/>"
                for p in result.composites[name]
            ]
            out += ["        </owl:intersectionOf>", "      </owl:Class>", "    </owl:equivalentClass>"]
        for other in sorted(disjoint.get(name, [])):
            out.append(f"    <owl:disjointWith rdf:resource={quoteattr(str(iri_for_name(other)))}/>")
        out.append("  </owl:Class>")
    return out
