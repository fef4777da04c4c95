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

Triples are produced once, as N-Triples text (terms from :mod:`kg.ntriples`), from which
both the fast store path (:meth:`kg.store.LesionStore.load_records`) and the rdflib graph
(:mod:`kg.rdf_io`, which also writes the files) are built; every IRI is
minted by :mod:`kg.vocab` from %-encoded identifiers and every literal is escaped, so no
record value can form RDF syntax.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from itertools import chain
from typing import Any

from rdflib.namespace import DCTERMS, PROV, SKOS

from kg import ntriples as nt
from kg import vocab
from kg.dicom_refs import dicom_ntriples
from kg.records import (
    LabelResolver,
    MinedSentence,
    Prediction,
    numbered,
    parse_prediction,
    parse_sentence,
)
from kg.vocab import KG, OA
from ontology.batch import ErrorSink, RecordError
from ontology.protocol import OntologyLike

# ----------------------------------------------------------------- predictions


def _fragment_xywh(box: tuple[float, float, float, float]) -> str:
    """Media-fragment ``xywh=`` (integers): the smallest pixel rectangle holding the box."""
    x1, y1 = math.floor(box[0]), math.floor(box[1])
    x2, y2 = math.ceil(box[2]), math.ceil(box[3])
    return f"xywh={x1},{y1},{max(x2 - x1, 1)},{max(y2 - y1, 1)}"


def _activity_lines(activity_id: str, model: Mapping[str, Any], ontology_version: str) -> Iterator[str]:
    activity = nt.minted(vocab.activity_iri(activity_id))
    model_id = vocab.short_hash(dict(model))
    model_node = nt.minted(vocab.model_iri(model_id))
    onto_node = nt.minted(vocab.ontology_version_iri(ontology_version))
    yield nt.line(activity, nt.A, nt.ref(PROV.Activity))
    yield nt.line(activity, nt.A, nt.ref(KG.InferenceActivity))
    yield nt.line(
        activity, nt.LABEL, nt.string(f"LesaNet inference with {model.get('name')} {model.get('version', '')}".strip())
    )
    yield nt.line(activity, nt.ref(PROV.used), model_node)
    yield nt.line(activity, nt.ref(PROV.used), onto_node)
    yield nt.line(model_node, nt.A, nt.ref(PROV.Entity))
    yield nt.line(model_node, nt.A, nt.ref(KG.Model))
    yield nt.line(model_node, nt.ref(KG.modelName), nt.string(str(model["name"])))
    if model.get("version") is not None:
        yield nt.line(model_node, nt.ref(KG.modelVersion), nt.string(str(model["version"])))
    if model.get("checkpoint_sha256"):
        yield nt.line(model_node, nt.ref(KG.checkpointSha256), nt.string(str(model["checkpoint_sha256"])))
    if model.get("config") is not None:
        config = model["config"]
        text = config if isinstance(config, str) else json.dumps(config, sort_keys=True)
        yield nt.line(model_node, nt.ref(KG.config), nt.string(text))
    yield from _ontology_version_lines(ontology_version)


def _ontology_version_lines(ontology_version: str) -> Iterator[str]:
    node = nt.minted(vocab.ontology_version_iri(ontology_version))
    yield nt.line(node, nt.A, nt.ref(PROV.Entity))
    yield nt.line(node, nt.A, nt.ref(KG.OntologyVersion))
    yield nt.line(node, nt.ref(KG.versionString), nt.string(ontology_version))
    yield nt.line(node, nt.ref(PROV.specializationOf), nt.iri(vocab.PREFIXES["lesion"].rstrip("#/")))


def activity_id_for(model: Mapping[str, Any], ontology_version: str) -> str:
    """The inference activity id: one per (model, ontology version)."""
    return vocab.short_hash({"model": dict(model), "ontology_version": ontology_version})


def _lesion_source_lines(pred: Prediction) -> Iterator[str]:
    lesion = nt.minted(vocab.lesion_iri(pred.lesion_id))
    yield nt.line(lesion, nt.A, nt.ref(KG.Lesion))
    yield nt.line(lesion, nt.ref(KG.lesionId), nt.string(pred.lesion_id))
    yield nt.line(lesion, nt.ref(KG.dataset), nt.string(pred.dataset))
    if pred.lesion_idx is not None:
        yield nt.line(lesion, nt.ref(KG.lesionIndex), nt.integer(pred.lesion_idx))
    region = nt.minted(vocab.region_iri(pred.lesion_id))
    image = nt.minted(vocab.image_iri(pred.dataset, pred.file or pred.lesion_id, pred.slice_index))
    yield nt.line(lesion, nt.ref(KG.keyRegion), region)
    yield nt.line(region, nt.A, nt.ref(OA.SpecificResource))
    yield nt.line(region, nt.ref(OA.hasSource), image)
    yield nt.line(image, nt.A, nt.ref(KG.Slice))
    if pred.file is not None:
        yield nt.line(image, nt.ref(KG.file), nt.string(pred.file))
    if pred.slice_index is not None:
        yield nt.line(image, nt.ref(KG.sliceIndex), nt.integer(pred.slice_index))
    if pred.box_px is None:  # region = the whole key slice
        return
    selector = nt.minted(vocab.selector_iri(pred.lesion_id))
    yield nt.line(lesion, nt.ref(KG.boxPx), nt.string(" ".join(f"{v:g}" for v in pred.box_px)))
    if pred.spacing_mm is not None:
        sx, sy = pred.spacing_mm[0], pred.spacing_mm[1]
        x1, y1, x2, y2 = pred.box_px
        box_mm = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
        yield nt.line(lesion, nt.ref(KG.boxMm), nt.string(" ".join(f"{v:.4g}" for v in box_mm)))
        yield nt.line(lesion, nt.ref(KG.widthMm), nt.double(round((x2 - x1) * sx, 4)))
        yield nt.line(lesion, nt.ref(KG.heightMm), nt.double(round((y2 - y1) * sy, 4)))
        yield nt.line(lesion, nt.ref(KG.spacingMm), nt.string(" ".join(f"{v:g}" for v in pred.spacing_mm)))
    yield nt.line(region, nt.ref(OA.hasSelector), selector)
    yield nt.line(selector, nt.A, nt.ref(OA.FragmentSelector))
    yield nt.line(selector, nt.ref(DCTERMS.conformsTo), nt.iri(vocab.MEDIA_FRAGMENTS))
    yield nt.line(selector, nt.VALUE, nt.string(_fragment_xywh(pred.box_px)))


@lru_cache(maxsize=4096)
def _local_segment(class_iri: str) -> str:
    return vocab.path_segment(vocab.local_name(class_iri))


# The slot for a lesion's IRI path (vocab.id_path) in an annotation template: a control
# character, which can appear in no IRI (kg.vocab %-encodes it, nt.iri rejects it) nor in
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
    a, motivated, body, has_target = nt.A, nt.ref(OA.motivatedBy), nt.ref(OA.hasBody), nt.ref(OA.hasTarget)
    classifying, annotation_class = nt.ref(OA.classifying), nt.ref(OA.Annotation)
    score_p, threshold_p, decision_p = nt.ref(KG.score), nt.ref(KG.threshold), nt.ref(KG.decision)
    generated, activity = nt.ref(PROV.wasGeneratedBy), nt.minted(vocab.activity_iri(activity_id))
    # vocab's layouts with the id path slotted
    target, lesion = f"<{vocab.REGION_LAYOUT.format(id=_ID)}>", f"<{vocab.LESION_LAYOUT.format(id=_ID)}>"
    parts, tails = [], []
    for class_iri in class_iris:
        cls = nt.iri(class_iri)
        node = f"<{vocab.ANNOTATION_LAYOUT.format(activity=activity_id, id=_ID, label=_local_segment(class_iri))}>"
        constant = (
            f"{node} {a} {annotation_class} .\n"
            f"{node} {motivated} {classifying} .\n"
            f"{node} {body} {cls} .\n"
            f"{node} {has_target} {target} .\n"
        )
        parts.append(constant.replace("%", "%%"))
        node_f = node.replace("%", "%%")
        parts.append(f'{node_f} {score_p} "%r"^^{nt.XSD_DOUBLE} .\n{node_f} {threshold_p} "%r"^^{nt.XSD_DOUBLE} .\n%s')
        undecided = f"{node} {decision_p} {nt.FALSE} .\n{node} {generated} {activity} .\n"
        decided = f"{node} {decision_p} {nt.TRUE} .\n{node} {generated} {activity} .\n{lesion} {a} {cls} .\n"
        tails.append((undecided, decided))
    return "".join(parts), tuple(tails)


def _prediction_text(pred: Prediction, activity_id: str) -> str:
    """All triples of one prediction record as N-Triples text."""
    lesion = nt.minted(vocab.lesion_iri(pred.lesion_id))
    labels = pred.labels
    template, tails = _annotation_template(activity_id, labels.class_iris)
    slots = tuple(
        chain.from_iterable(zip(labels.scores, labels.thresholds, map(tuple.__getitem__, tails, labels.decisions)))
    )
    annotations = (template % slots).replace(_ID, vocab.id_path(pred.lesion_id))
    lines = list(_lesion_source_lines(pred))
    lines.append(annotations)
    activity = nt.minted(vocab.activity_iri(activity_id))
    for rank, neighbor in enumerate(pred.neighbors, start=1):
        node = nt.minted(vocab.neighbor_iri(activity_id, pred.lesion_id, rank))
        lines.append(nt.line(lesion, nt.ref(KG.neighbor), node))
        lines.append(nt.line(node, nt.A, nt.ref(KG.Neighbor)))
        lines.append(nt.line(node, nt.ref(KG.neighborLesion), nt.minted(vocab.lesion_iri(neighbor.lesion_id))))
        lines.append(nt.line(node, nt.ref(KG.distance), nt.double(neighbor.distance)))
        lines.append(nt.line(node, nt.ref(KG.rank), nt.integer(rank)))
        lines.append(nt.line(node, nt.ref(PROV.wasGeneratedBy), activity))
    return "".join(lines)


def prediction_ntriples(records: Iterable[Any], onto: OntologyLike, errors: ErrorSink | None = None) -> Iterator[str]:
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
            yield nt.line(nt.iri(class_iri), nt.iri(f"{SKOS}{m.predicate}"), nt.iri(m.object_iri))


# ----------------------------------------------------------------- mined sentences


def _sentence_lines(sentence: MinedSentence, activity_id: str, dataset: str) -> Iterator[str]:
    lesion_id = f"{dataset}/{sentence.lesion_idx}"
    lesion = nt.minted(vocab.lesion_iri(lesion_id))
    node = nt.minted(vocab.sentence_iri(sentence.sentence_id))
    activity = nt.minted(vocab.activity_iri(activity_id))
    yield nt.line(lesion, nt.A, nt.ref(KG.Lesion))
    yield nt.line(lesion, nt.ref(KG.lesionId), nt.string(lesion_id))
    yield nt.line(lesion, nt.ref(KG.dataset), nt.string(dataset))
    yield nt.line(lesion, nt.ref(KG.lesionIndex), nt.integer(sentence.lesion_idx))
    yield nt.line(node, nt.A, nt.ref(KG.ReportSentence))
    yield nt.line(node, nt.A, nt.ref(PROV.Entity))
    yield nt.line(node, nt.VALUE, nt.string(sentence.text))
    yield nt.line(node, nt.ref(KG.describes), lesion)
    mentions_by_class: dict[str, list[str]] = {}
    for mention in sentence.mentions:
        mnode = nt.minted(vocab.mention_iri(activity_id, sentence.sentence_id, mention.start, mention.end))
        mentions_by_class.setdefault(mention.iri, []).append(mnode)
        yield nt.line(mnode, nt.A, nt.ref(OA.TextPositionSelector))
        yield nt.line(mnode, nt.ref(OA.start), nt.integer(mention.start))
        yield nt.line(mnode, nt.ref(OA.end), nt.integer(mention.end))
        yield nt.line(mnode, nt.ref(OA.exact), nt.string(mention.text))
        yield nt.line(mnode, nt.ref(KG.inSentence), node)
    for relation, _name, class_iri in sentence.relations:
        label = nt.minted(vocab.training_label_iri(activity_id, sentence.sentence_id, vocab.local_name(class_iri)))
        yield nt.line(label, nt.A, nt.ref(OA.Annotation))
        yield nt.line(label, nt.A, nt.ref(KG.TrainingLabel))
        yield nt.line(label, nt.ref(OA.motivatedBy), nt.ref(OA.classifying))
        yield nt.line(label, nt.ref(OA.hasBody), nt.iri(class_iri))
        yield nt.line(label, nt.ref(OA.hasTarget), lesion)
        yield nt.line(label, nt.ref(KG.relation), nt.string(relation))
        yield nt.line(label, nt.ref(PROV.wasDerivedFrom), node)
        yield nt.line(label, nt.ref(PROV.wasGeneratedBy), activity)
        for mnode in mentions_by_class.get(class_iri, []):
            yield nt.line(label, nt.ref(KG.evidence), mnode)


def sentence_ntriples(
    records: Iterable[Any],
    onto: OntologyLike,
    miner: Mapping[str, Any] | None = None,
    dataset: str = "deeplesion",
    errors: ErrorSink | None = None,
) -> Iterator[str]:
    """N-Triples lines for mined-sentence records: training labels with their provenance.

    ``dataset`` makes the lesion ids (``<dataset>/<lesion_idx>``) meet those of the
    prediction records; ``miner`` names the text-mining step (name, version, config).
    """
    miner = dict(miner or {"name": "lesanet-textmine"})
    activity_id = vocab.short_hash({"miner": miner, "ontology_version": onto.version})
    activity = nt.minted(vocab.activity_iri(activity_id))
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
            yield nt.line(activity, nt.A, nt.ref(PROV.Activity))
            yield nt.line(activity, nt.A, nt.ref(KG.TextMiningActivity))
            yield nt.line(activity, nt.LABEL, nt.string(f"label mining with {miner.get('name')}"))
            yield nt.line(activity, nt.ref(PROV.used), nt.minted(vocab.ontology_version_iri(onto.version)))
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
        child = nt.iri(str(onto.iri(name)))
        for parent in sorted(onto.parents(name)):
            yield nt.line(child, nt.SUBCLASS, nt.iri(str(onto.iri(parent))))
        for other in sorted(onto.exclusive(name)):
            yield nt.line(child, nt.DISJOINT, nt.iri(str(onto.iri(other))))
