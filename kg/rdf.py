"""Predictions and text-mined labels as RDF: W3C Web Annotation + PROV-O.

The model (described by ``kg/shapes.ttl``):

* a lesion ``kg:Lesion`` with its source (dataset, index, file, key slice, box in pixels
  and mm); its key-slice region is an ``oa:SpecificResource`` whose
  ``oa:FragmentSelector`` has the value ``xywh=x,y,w,h``;
* each scored label an ``oa:Annotation`` (motivation ``oa:classifying``) with the class
  IRI as body, the region as target, ``kg:score``/``kg:threshold`` (``xsd:double``) and
  ``kg:decision`` (``xsd:boolean``); a decided label also types the lesion (``rdf:type``);
* every annotation ``prov:wasGeneratedBy`` one inference activity that ``prov:used`` the
  model (name, version, checkpoint SHA-256, config) and the ontology version;
* text-mined training labels: ``kg:TrainingLabel`` annotations derived from the report
  sentence (``prov:wasDerivedFrom``) with the mention's text position as evidence.

Triples are produced once, as N-Triples text, from which both the fast store path
(:meth:`kg.store.LesionStore.load_records`) and the rdflib graph are built; every IRI is
minted by :mod:`kg.vocab` from %-encoded identifiers and every literal is escaped, so no
record value can form RDF syntax.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

import pyoxigraph as ox
from rdflib import BNode, Graph, Literal, URIRef
from rdflib.namespace import DCTERMS, OWL, PROV, RDF, RDFS, SKOS, XSD

from kg import vocab
from kg.dicom_refs import dicom_ntriples
from kg.errors import KgError
from kg.formats import output_format
from kg.records import (
    LabelResolver,
    MinedSentence,
    Prediction,
    RecordError,
    numbered,
    parse_prediction,
    parse_sentence,
)
from kg.vocab import KG, OA
from ontology.files import write_text_atomic
from ontology.protocol import OntologyLike

# ----------------------------------------------------------------- N-Triples terms

_XSD_DOUBLE = f"<{XSD.double}>"
_XSD_INTEGER = f"<{XSD.integer}>"
_XSD_STRING = str(XSD.string)
_TRUE = f'"true"^^<{XSD.boolean}>'
_FALSE = f'"false"^^<{XSD.boolean}>'

_A = f"<{RDF.type}>"
_VALUE = f"<{RDF.value}>"
_LABEL = f"<{RDFS.label}>"
_SUBCLASS = f"<{RDFS.subClassOf}>"
_DISJOINT = f"<{OWL.disjointWith}>"


_NOT_IN_IRI = re.compile(r'[<>"{}|^`\\\x00-\x20]')


@lru_cache(maxsize=4096)
def _iri(value: str) -> str:
    """``<value>`` for an IRI from outside (ontology classes, constants), checked once."""
    if _NOT_IN_IRI.search(value):
        raise RecordError(f"not a usable IRI: {value!r}")
    return f"<{value}>"


def _minted(value: str) -> str:
    """``<value>`` for an IRI minted by :mod:`kg.vocab` (%-encoded: safe by construction)."""
    return f"<{value}>"


def _p(ns_term: Any) -> str:
    return f"<{ns_term}>"


def _string(text: str) -> str:
    # JSON string escaping is valid N-Triples STRING_LITERAL_QUOTE syntax.
    return json.dumps(text, ensure_ascii=False)


def _double(value: float) -> str:
    return f'"{float(value)!r}"^^{_XSD_DOUBLE}'


def _integer(value: int) -> str:
    return f'"{int(value)}"^^{_XSD_INTEGER}'


def _bool(value: bool) -> str:
    return _TRUE if value else _FALSE


def _line(s: str, p: str, o: str) -> str:
    return f"{s} {p} {o} .\n"


# ----------------------------------------------------------------- predictions


def _fragment_xywh(box: tuple[float, float, float, float]) -> str:
    """Media-fragment ``xywh=`` (integers): the smallest pixel rectangle holding the box."""
    x1, y1 = math.floor(box[0]), math.floor(box[1])
    x2, y2 = math.ceil(box[2]), math.ceil(box[3])
    return f"xywh={x1},{y1},{max(x2 - x1, 1)},{max(y2 - y1, 1)}"


def _activity_lines(activity_id: str, model: Mapping[str, Any], ontology_version: str) -> Iterator[str]:
    activity = _minted(vocab.activity_iri(activity_id))
    model_id = vocab.short_hash(dict(model))
    model_node = _minted(vocab.model_iri(model_id))
    onto_node = _minted(vocab.ontology_version_iri(ontology_version))
    yield _line(activity, _A, _p(PROV.Activity))
    yield _line(activity, _A, _p(KG.InferenceActivity))
    yield _line(
        activity, _LABEL, _string(f"LesaNet inference with {model.get('name')} {model.get('version', '')}".strip())
    )
    yield _line(activity, _p(PROV.used), model_node)
    yield _line(activity, _p(PROV.used), onto_node)
    yield _line(model_node, _A, _p(PROV.Entity))
    yield _line(model_node, _A, _p(KG.Model))
    yield _line(model_node, _p(KG.modelName), _string(str(model["name"])))
    if model.get("version") is not None:
        yield _line(model_node, _p(KG.modelVersion), _string(str(model["version"])))
    if model.get("checkpoint_sha256"):
        yield _line(model_node, _p(KG.checkpointSha256), _string(str(model["checkpoint_sha256"])))
    if model.get("config") is not None:
        config = model["config"]
        text = config if isinstance(config, str) else json.dumps(config, sort_keys=True)
        yield _line(model_node, _p(KG.config), _string(text))
    yield from _ontology_version_lines(ontology_version)


def _ontology_version_lines(ontology_version: str) -> Iterator[str]:
    node = _minted(vocab.ontology_version_iri(ontology_version))
    yield _line(node, _A, _p(PROV.Entity))
    yield _line(node, _A, _p(KG.OntologyVersion))
    yield _line(node, _p(KG.versionString), _string(ontology_version))
    yield _line(node, _p(PROV.specializationOf), _iri(vocab.PREFIXES["lesion"].rstrip("#/")))


def activity_id_for(model: Mapping[str, Any], ontology_version: str) -> str:
    """The inference activity id: one per (model, ontology version)."""
    return vocab.short_hash({"model": dict(model), "ontology_version": ontology_version})


def _lesion_source_lines(pred: Prediction) -> Iterator[str]:
    lesion = _minted(vocab.lesion_iri(pred.lesion_id))
    yield _line(lesion, _A, _p(KG.Lesion))
    yield _line(lesion, _p(KG.lesionId), _string(pred.lesion_id))
    yield _line(lesion, _p(KG.dataset), _string(pred.dataset))
    if pred.lesion_idx is not None:
        yield _line(lesion, _p(KG.lesionIndex), _integer(pred.lesion_idx))
    region = _minted(vocab.region_iri(pred.lesion_id))
    image = _minted(vocab.image_iri(pred.dataset, pred.file or pred.lesion_id, pred.slice_index))
    yield _line(lesion, _p(KG.keyRegion), region)
    yield _line(region, _A, _p(OA.SpecificResource))
    yield _line(region, _p(OA.hasSource), image)
    yield _line(image, _A, _p(KG.Slice))
    if pred.file is not None:
        yield _line(image, _p(KG.file), _string(pred.file))
    if pred.slice_index is not None:
        yield _line(image, _p(KG.sliceIndex), _integer(pred.slice_index))
    if pred.box_px is None:  # region = the whole key slice
        return
    selector = _minted(vocab.selector_iri(pred.lesion_id))
    yield _line(lesion, _p(KG.boxPx), _string(" ".join(f"{v:g}" for v in pred.box_px)))
    if pred.spacing_mm is not None:
        sx, sy = pred.spacing_mm[0], pred.spacing_mm[1]
        x1, y1, x2, y2 = pred.box_px
        box_mm = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
        yield _line(lesion, _p(KG.boxMm), _string(" ".join(f"{v:.4g}" for v in box_mm)))
        yield _line(lesion, _p(KG.widthMm), _double(round((x2 - x1) * sx, 4)))
        yield _line(lesion, _p(KG.heightMm), _double(round((y2 - y1) * sy, 4)))
        yield _line(lesion, _p(KG.spacingMm), _string(" ".join(f"{v:g}" for v in pred.spacing_mm)))
    yield _line(region, _p(OA.hasSelector), selector)
    yield _line(selector, _A, _p(OA.FragmentSelector))
    yield _line(selector, _p(DCTERMS.conformsTo), _iri(vocab.MEDIA_FRAGMENTS))
    yield _line(selector, _VALUE, _string(_fragment_xywh(pred.box_px)))


@lru_cache(maxsize=4096)
def _local_segment(class_iri: str) -> str:
    return vocab.path_segment(vocab.local_name(class_iri))


# The slot for a lesion's IRI path (vocab.id_path) in an annotation template: a control
# character, which can appear in no IRI (kg.vocab %-encodes it, _iri rejects it) nor in
# a float's repr.
_ID = "\x01"


@lru_cache(maxsize=64)
def _annotation_template(activity_id: str, class_iris: tuple[str, ...]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The annotation triples of one label sequence as a %-format string (score,
    threshold, tail per label) and each label's (undecided, decided) tail.

    Built once per (activity, label sequence) -- every record of a model lists the same
    171 labels -- so a lesion's 1,368 annotation triples are one %-format and one
    replace instead of a function call per triple.
    """
    a, motivated, body, has_target = _A, _p(OA.motivatedBy), _p(OA.hasBody), _p(OA.hasTarget)
    classifying, annotation_class = _p(OA.classifying), _p(OA.Annotation)
    score_p, threshold_p, decision_p = _p(KG.score), _p(KG.threshold), _p(KG.decision)
    generated, activity = _p(PROV.wasGeneratedBy), _minted(vocab.activity_iri(activity_id))
    # vocab's layouts with the id path slotted
    target, lesion = f"<{vocab.REGION_LAYOUT.format(id=_ID)}>", f"<{vocab.LESION_LAYOUT.format(id=_ID)}>"
    parts, tails = [], []
    for class_iri in class_iris:
        cls = _iri(class_iri)
        node = f"<{vocab.ANNOTATION_LAYOUT.format(activity=activity_id, id=_ID, label=_local_segment(class_iri))}>"
        constant = (
            f"{node} {a} {annotation_class} .\n"
            f"{node} {motivated} {classifying} .\n"
            f"{node} {body} {cls} .\n"
            f"{node} {has_target} {target} .\n"
        )
        parts.append(constant.replace("%", "%%"))
        node_f = node.replace("%", "%%")
        parts.append(f'{node_f} {score_p} "%r"^^{_XSD_DOUBLE} .\n{node_f} {threshold_p} "%r"^^{_XSD_DOUBLE} .\n%s')
        undecided = f"{node} {decision_p} {_FALSE} .\n{node} {generated} {activity} .\n"
        decided = f"{node} {decision_p} {_TRUE} .\n{node} {generated} {activity} .\n{lesion} {a} {cls} .\n"
        tails.append((undecided, decided))
    return "".join(parts), tuple(tails)


def _prediction_text(pred: Prediction, activity_id: str) -> str:
    """All triples of one prediction record as N-Triples text."""
    lesion = _minted(vocab.lesion_iri(pred.lesion_id))
    labels = pred.labels
    template, tails = _annotation_template(activity_id, labels.class_iris)
    slots = tuple(
        chain.from_iterable(zip(labels.scores, labels.thresholds, map(tuple.__getitem__, tails, labels.decisions)))
    )
    annotations = (template % slots).replace(_ID, vocab.id_path(pred.lesion_id))
    lines = list(_lesion_source_lines(pred))
    lines.append(annotations)
    activity = _minted(vocab.activity_iri(activity_id))
    for rank, neighbor in enumerate(pred.neighbors, start=1):
        node = _minted(vocab.neighbor_iri(activity_id, pred.lesion_id, rank))
        lines.append(_line(lesion, _p(KG.neighbor), node))
        lines.append(_line(node, _A, _p(KG.Neighbor)))
        lines.append(_line(node, _p(KG.neighborLesion), _minted(vocab.lesion_iri(neighbor.lesion_id))))
        lines.append(_line(node, _p(KG.distance), _double(neighbor.distance)))
        lines.append(_line(node, _p(KG.rank), _integer(rank)))
        lines.append(_line(node, _p(PROV.wasGeneratedBy), activity))
    return "".join(lines)


def prediction_ntriples(records: Iterable[Any], onto: OntologyLike, errors: list[str] | None = None) -> Iterator[str]:
    """N-Triples text for prediction records (docs/architecture.md format): each item is
    one or more whole lines (a record's ~1,400 triples come as one string).

    A bad record raises :class:`RecordError`, or, when ``errors`` is a list, is reported
    there (one line naming the record) and skipped so the rest still converts.
    """
    resolver = LabelResolver(onto)
    activities: set[str] = set()
    mapped: set[str] = set()
    for where, record in numbered(records):
        try:
            pred = parse_prediction(record, resolver, where)
            activity_id = activity_id_for(pred.model, pred.ontology_version)
            text = _prediction_text(pred, activity_id)
            text += "".join(dicom_ntriples(record, pred.lesion_id, pred.dataset, pred.file, pred.slice_index, where))
        except RecordError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
            continue
        if activity_id not in activities:
            activities.add(activity_id)
            yield from _activity_lines(activity_id, pred.model, pred.ontology_version)
        yield from _mapping_lines(onto, pred.labels.class_iris, mapped)
        yield text


def _mapping_lines(onto: OntologyLike, class_iris: Iterable[str], done: set[str]) -> Iterator[str]:
    """``<class> skos:exactMatch|closeMatch <code>`` once per label class, from the ontology's
    mappings (SSSOM files attached with ``--mappings``), so a prediction carries its codes."""
    mappings = getattr(onto, "mappings", None)
    if mappings is None:
        return
    for class_iri in class_iris:
        if class_iri in done:
            continue
        done.add(class_iri)
        for m in mappings(class_iri):
            yield _line(_iri(class_iri), _iri(f"{SKOS}{m.predicate}"), _iri(m.object_iri))


# ----------------------------------------------------------------- mined sentences


def _sentence_lines(sentence: MinedSentence, activity_id: str, dataset: str) -> Iterator[str]:
    lesion_id = f"{dataset}/{sentence.lesion_idx}"
    lesion = _minted(vocab.lesion_iri(lesion_id))
    node = _minted(vocab.sentence_iri(sentence.sentence_id))
    activity = _minted(vocab.activity_iri(activity_id))
    yield _line(lesion, _A, _p(KG.Lesion))
    yield _line(lesion, _p(KG.lesionId), _string(lesion_id))
    yield _line(lesion, _p(KG.dataset), _string(dataset))
    yield _line(lesion, _p(KG.lesionIndex), _integer(sentence.lesion_idx))
    yield _line(node, _A, _p(KG.ReportSentence))
    yield _line(node, _A, _p(PROV.Entity))
    yield _line(node, _VALUE, _string(sentence.text))
    yield _line(node, _p(KG.describes), lesion)
    mentions_by_class: dict[str, list[str]] = {}
    for mention in sentence.mentions:
        mnode = _minted(vocab.mention_iri(activity_id, sentence.sentence_id, mention.start, mention.end))
        mentions_by_class.setdefault(mention.class_iri, []).append(mnode)
        yield _line(mnode, _A, _p(OA.TextPositionSelector))
        yield _line(mnode, _p(OA.start), _integer(mention.start))
        yield _line(mnode, _p(OA.end), _integer(mention.end))
        yield _line(mnode, _p(OA.exact), _string(mention.text))
        yield _line(mnode, _p(KG.inSentence), node)
    for relation, _name, class_iri in sentence.relations:
        label = _minted(vocab.training_label_iri(activity_id, sentence.sentence_id, vocab.local_name(class_iri)))
        yield _line(label, _A, _p(OA.Annotation))
        yield _line(label, _A, _p(KG.TrainingLabel))
        yield _line(label, _p(OA.motivatedBy), _p(OA.classifying))
        yield _line(label, _p(OA.hasBody), _iri(class_iri))
        yield _line(label, _p(OA.hasTarget), lesion)
        yield _line(label, _p(KG.relation), _string(relation))
        yield _line(label, _p(PROV.wasDerivedFrom), node)
        yield _line(label, _p(PROV.wasGeneratedBy), activity)
        for mnode in mentions_by_class.get(class_iri, []):
            yield _line(label, _p(KG.evidence), mnode)


def sentence_ntriples(
    records: Iterable[Any],
    onto: OntologyLike,
    miner: Mapping[str, Any] | None = None,
    dataset: str = "deeplesion",
    errors: list[str] | None = None,
) -> Iterator[str]:
    """N-Triples lines for mined-sentence records: training labels with their provenance.

    ``dataset`` makes the lesion ids (``<dataset>/<lesion_idx>``) meet those of the
    prediction records; ``miner`` names the text-mining step (name, version, config).
    """
    miner = dict(miner or {"name": "lesanet-textmine"})
    activity_id = vocab.short_hash({"miner": miner, "ontology_version": onto.version})
    activity = _minted(vocab.activity_iri(activity_id))
    resolver = LabelResolver(onto)
    header_done = False
    for where, record in numbered(records):
        try:
            lines = list(_sentence_lines(parse_sentence(record, resolver, where), activity_id, dataset))
        except RecordError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
            continue
        if not header_done:
            header_done = True
            yield _line(activity, _A, _p(PROV.Activity))
            yield _line(activity, _A, _p(KG.TextMiningActivity))
            yield _line(activity, _LABEL, _string(f"label mining with {miner.get('name')}"))
            yield _line(activity, _p(PROV.used), _minted(vocab.ontology_version_iri(onto.version)))
            yield from _ontology_version_lines(onto.version)
        yield from lines


# ----------------------------------------------------------------- ontology


def ontology_inferred_ntriples(onto: OntologyLike) -> Iterator[str]:
    """Entailed axioms that plain SPARQL cannot derive quickly, materialised:

    * direct parent edges (asserted + inferred composites) as ``rdfs:subClassOf``; the
      OWL file states composites as ``owl:intersectionOf``, so without these
      ``rdfs:subClassOf*`` would miss them;
    * inherited exclusions as ``owl:disjointWith`` (if x and y are disjoint, so are their
      subclasses), so a violation check is one join instead of two property paths per
      stated axiom (tests check these equal the closure of the stated axioms).
    """
    for name in sorted(onto.terms):
        child = _iri(str(onto.iri(name)))
        for parent in sorted(onto.parents(name)):
            yield _line(child, _SUBCLASS, _iri(str(onto.iri(parent))))
        for other in sorted(onto.exclusive(name)):
            yield _line(child, _DISJOINT, _iri(str(onto.iri(other))))


# ----------------------------------------------------------------- rdflib graphs and files


def _bind_prefixes(graph: Graph) -> Graph:
    for prefix, namespace in vocab.PREFIXES.items():
        graph.bind(prefix, namespace, override=True)
    return graph


def ntriples_to_graph(lines: Iterable[str], graph: Graph | None = None) -> Graph:
    """Add N-Triples lines to an rdflib graph (new, with the project prefixes, by default).

    pyoxigraph parses (about 3x faster than rdflib's N-Triples parser); the terms are
    converted once each (IRIs and repeated literals are cached).
    """
    graph = _bind_prefixes(Graph()) if graph is None else graph
    iris: dict[str, URIRef] = {}
    literals: dict[tuple[str, str, str | None], Literal] = {}

    def term(node: Any) -> Any:
        if isinstance(node, ox.NamedNode):
            iri = iris.get(node.value)
            if iri is None:
                iri = iris[node.value] = URIRef(node.value)
            return iri
        if isinstance(node, ox.Literal):
            key = (node.value, node.datatype.value, node.language)
            literal = literals.get(key)
            if literal is None:
                if node.language:
                    literal = Literal(node.value, lang=node.language)
                elif node.datatype.value == _XSD_STRING:  # rdflib's plain literal
                    literal = Literal(node.value)
                else:
                    literal = Literal(node.value, datatype=URIRef(node.datatype.value))
                if len(literals) < 100_000:
                    literals[key] = literal
            return literal
        return BNode(node.value)

    for chunk in chunked(lines, 50_000):
        triples = ox.parse(chunk, format=ox.RdfFormat.N_TRIPLES)
        graph.addN((term(t.subject), term(t.predicate), term(t.object), graph) for t in triples)
    return graph


def chunked(pieces: Iterable[str], size: int) -> Iterator[str]:
    """Join N-Triples text pieces (whole lines each; a prediction record comes as one
    piece) into chunks of about ``size`` lines."""
    batch: list[str] = []
    lines = 0
    for piece in pieces:
        batch.append(piece)
        lines += piece.count("\n")
        if lines >= size:
            yield "".join(batch)
            batch, lines = [], 0
    if batch:
        yield "".join(batch)


def predictions_to_graph(records: Iterable[Any], onto: OntologyLike, errors: list[str] | None = None) -> Graph:
    """Prediction records as an rdflib graph (see :func:`prediction_ntriples` for errors)."""
    return ntriples_to_graph(prediction_ntriples(records, onto, errors))


def sentences_to_graph(
    records: Iterable[Any],
    onto: OntologyLike,
    miner: Mapping[str, Any] | None = None,
    dataset: str = "deeplesion",
    errors: list[str] | None = None,
) -> Graph:
    """Mined-sentence records as an rdflib graph of training labels with provenance."""
    return ntriples_to_graph(sentence_ntriples(records, onto, miner, dataset, errors))


def turtle_from_ntriples(ntriples: str) -> str:
    """Turtle with the project prefixes, subjects grouped, literals kept exactly as written
    (pyoxigraph; rdflib's Turtle writer would round doubles to 7 digits)."""
    triples = sorted(
        ox.parse(ntriples, format=ox.RdfFormat.N_TRIPLES),
        key=lambda t: (str(t.subject), str(t.predicate), str(t.object)),
    )
    # No prefix for data IRIs: their local parts hold '/', which Turtle would escape.
    prefixes = {k: v for k, v in vocab.PREFIXES.items() if k != "data"}
    text = ox.serialize(triples, format=ox.RdfFormat.TURTLE, prefixes=prefixes)
    assert text is not None  # serialize returns the bytes when given no output
    return text.decode("utf-8")


def serialize_graph(graph: Graph, fmt: str) -> str:
    """A graph as Turtle, sorted N-Triples or compacted JSON-LD (project prefixes)."""
    fmt = output_format("", fmt)
    if fmt == "json-ld":
        context = {prefix: ns for prefix, ns in vocab.PREFIXES.items()}
        return graph.serialize(format="json-ld", context=context, auto_compact=True)
    ntriples = graph.serialize(format="nt")
    if fmt == "nt":
        return "".join(sorted(ntriples.splitlines(keepends=True)))
    return turtle_from_ntriples(ntriples)


def write_rdf(
    graph_or_records: Graph | Iterable[Any],
    path: str | os.PathLike[str],
    fmt: str | None = None,
    onto: OntologyLike | None = None,
    errors: list[str] | None = None,
) -> int:
    """Write a graph, or prediction records, as Turtle / N-Triples / JSON-LD (atomically).

    Records need ``onto``; Turtle and N-Triples from records skip rdflib. Returns the
    number of triples written.
    """
    target = Path(path)
    fmt = output_format(target, fmt)
    if isinstance(graph_or_records, Graph):
        text = serialize_graph(graph_or_records, fmt)
        write_text_atomic(target, text)
        return len(graph_or_records)
    if onto is None:
        raise KgError("write_rdf needs the ontology to convert prediction records")
    if fmt == "json-ld":
        graph = predictions_to_graph(graph_or_records, onto, errors)
        text = serialize_graph(graph, fmt)
        write_text_atomic(target, text)
        return len(graph)
    lines = list(prediction_ntriples(graph_or_records, onto, errors))
    ntriples = "".join(lines)
    text = "".join(sorted(ntriples.splitlines(keepends=True))) if fmt == "nt" else turtle_from_ntriples(ntriples)
    write_text_atomic(target, text)
    return ntriples.count("\n")
