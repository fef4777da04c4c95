"""kg: RDF model, SHACL shapes, pyoxigraph store, canned queries, CLI.

Canned query answers are checked against what the JSON records say (an oracle computed
in Python from the records and the ontology), on pyoxigraph and on rdflib.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import rdflib
import rdflib.compare
from hypothesis import given, settings
from hypothesis import strategies as st
from rdflib.namespace import RDF

import cli
from kg import rdf, rdf_io, vocab
from kg.binding import bind_values
from kg.canned import CANNED, run_canned
from kg.store import LesionStore, RdflibStore
from kg.validate import validate_graph
from ontology.batch import RecordError

N_LESIONS = 12
MODEL = {"name": "LesaNet", "version": "0.1.0", "checkpoint_sha256": "ab" * 32, "config": "cpu-small"}
# Each lesion's decided labels: one of these, expanded with its ancestors.
SEEDS = ["lung nodule", "liver mass", "kidney cyst", "right lung", "lymph node", "liver", "bone"]


def make_predictions(onto, n: int = N_LESIONS, seed: int = 0) -> list[dict]:
    """Prediction records in the docs/architecture.md format, with one planted violation."""
    rng = random.Random(seed)
    label_set = onto.label_set("lesanet171")
    in_set = set(label_set)
    records = []
    for i in range(n):
        positives = onto.expand([onto.term(rng.choice(SEEDS)).name]) & in_set
        if i == 0:  # a lesion whose decided labels break an exclusion
            positives |= {"lung", "liver"}
        labels = []
        for name in label_set:
            score = round(rng.uniform(0.6, 0.99) if name in positives else rng.uniform(0.0, 0.4), 6)
            labels.append(
                {"label": name, "iri": onto.iri(name), "score": score, "threshold": 0.5, "decision": score >= 0.5}
            )
        records.append(
            {
                "lesion_id": f"deeplesion/{i}",
                "source": {
                    "dataset": "phantom",
                    "lesion_idx": i,
                    "file": f"Images_png/000001_01_01/{i:03d}.png",
                    "slice": 40 + i,
                    "box_px": [10.5, 20.0, 40.25 + i, 60.0],
                    "spacing_mm": [0.8, 0.8, 2.0],
                },
                "labels": labels,
                "model": MODEL,
                "ontology_version": onto.version,
                "neighbors": [
                    {"lesion_id": f"deeplesion/{(i + k) % n}", "distance": round(0.1 * k + 0.01 * i, 4)}
                    for k in (1, 2, 3)
                ],
            }
        )
    return records


def make_sentences() -> list[dict]:
    texts = {
        3: ("BOOKMARK a tiny lung nodule in the right lung.", ["lung nodule", "right lung", "tiny"], ["cyst"]),
        5: ('BOOKMARK "liver" mass, possibly a cyst; OTHER_BMK in the kidney.', ["liver mass"], ["cyst"]),
    }
    records = []
    for idx, (text, relevant, uncertain) in texts.items():
        mentions = []
        for name in relevant + uncertain:
            start = text.find(name)
            if start >= 0:
                mentions.append(
                    {
                        "start": start,
                        "end": start + len(name),
                        "text": name,
                        "label": name,
                        "relation": "relevant" if name in relevant else "uncertain",
                    }
                )
        records.append(
            {
                "id": str(idx),
                "lesion_idx": idx,
                "text": text,
                "mentions": mentions,
                "relevant": relevant,
                "uncertain": uncertain,
                "irrelevant": ["kidney"],
            }
        )
    return records


@pytest.fixture(scope="session")
def predictions(shipped_ontology) -> list[dict]:
    return make_predictions(shipped_ontology)


@pytest.fixture(scope="session")
def sentences() -> list[dict]:
    return make_sentences()


@pytest.fixture(scope="session")
def disk_store(tmp_path_factory, shipped_ontology, predictions, sentences) -> LesionStore:
    store = LesionStore(tmp_path_factory.mktemp("kgstore") / "store")
    store.load_ontology(shipped_ontology)
    store.load_records(predictions, shipped_ontology)
    store.load_sentences(sentences, shipped_ontology, dataset="deeplesion")
    store.flush()
    return store


@pytest.fixture(scope="session")
def rdflib_store(shipped_ontology, predictions, sentences) -> RdflibStore:
    store = RdflibStore()
    store.load_ontology(shipped_ontology)
    store.load_graph(rdf_io.predictions_to_graph(predictions, shipped_ontology))
    store.load_graph(rdf_io.sentences_to_graph(sentences, shipped_ontology), vocab.GRAPH_TRAINING_LABELS)
    return store


def decided(record: dict) -> set[str]:
    return {label["label"] for label in record["labels"] if label["decision"]}


def canonical(result) -> set[tuple]:
    """Rows as a set of tuples; GROUP_CONCAT values compared as sets (their order is free),
    and an empty GROUP_CONCAT as "" (rdflib, per the spec) or unbound (Oxigraph)."""
    rows = set()
    for row in result.values():
        cells = ("" if v is None else v for v in row.values())
        rows.add(tuple(frozenset(v.split(", ")) if isinstance(v, str) and ", " in v else v for v in cells))
    return rows


# ----------------------------------------------------------------- the RDF model


def test_prediction_graph_follows_the_model(shipped_ontology, predictions):
    graph = rdf_io.predictions_to_graph(predictions[:3], shipped_ontology)
    annotations = set(graph.subjects(RDF.type, vocab.OA.Annotation))
    assert len(annotations) == 3 * 171
    scores = list(graph.objects(None, vocab.KG.score))
    assert len(scores) == 3 * 171 and {s.datatype for s in scores} == {rdflib.XSD.double}
    # A decided label types the lesion with the ontology class.
    lesion = rdflib.URIRef(vocab.lesion_iri("deeplesion/1"))
    types = {str(t) for t in graph.objects(lesion, RDF.type)} - {str(vocab.KG.Lesion)}
    assert types == {shipped_ontology.iri(n) for n in decided(predictions[1])}
    # Target: the key-slice region with a media-fragment xywh selector.
    region = graph.value(lesion, vocab.KG.keyRegion)
    selector = graph.value(region, vocab.OA.hasSelector)
    assert str(graph.value(selector, RDF.value)) == "xywh=10,20,32,40"
    # Provenance: one activity that used the model (with its checkpoint hash) and the ontology.
    activities = set(graph.objects(None, rdflib.PROV.wasGeneratedBy))
    assert len(activities) == 1
    used = set(graph.objects(activities.pop(), rdflib.PROV.used))
    hashes = {str(graph.value(u, vocab.KG.checkpointSha256)) for u in used} - {"None"}
    versions = {str(graph.value(u, vocab.KG.versionString)) for u in used} - {"None"}
    assert hashes == {"ab" * 32} and versions == {shipped_ontology.version}


@pytest.mark.parametrize("fmt,suffix", [("turtle", ".ttl"), ("nt", ".nt"), ("json-ld", ".jsonld")])
def test_written_rdf_parses_back_to_the_same_graph(tmp_path, shipped_ontology, predictions, fmt, suffix):
    expected = rdf_io.predictions_to_graph(predictions[:2], shipped_ontology)
    path = tmp_path / f"preds{suffix}"
    count = rdf_io.write_rdf(predictions[:2], path, onto=shipped_ontology)  # format from the suffix
    again = rdflib.Graph().parse(path, format={"turtle": "turtle", "nt": "nt", "json-ld": "json-ld"}[fmt])
    assert count == len(expected) == len(again)
    assert rdflib.compare.isomorphic(expected, again)
    assert not list(tmp_path.glob(".preds*"))  # no temp file left behind


def test_turtle_keeps_scores_exactly(tmp_path, shipped_ontology, predictions):
    path = tmp_path / "p.ttl"
    rdf_io.write_rdf(rdf_io.predictions_to_graph(predictions[:1], shipped_ontology), path)
    again = rdflib.Graph().parse(path, format="turtle")
    written = sorted(float(s) for s in again.objects(None, vocab.KG.score))
    assert written == sorted(label["score"] for label in predictions[0]["labels"])


def test_shacl_accepts_what_the_toolkit_emits(shipped_ontology, predictions, sentences):
    graph = rdf_io.predictions_to_graph(predictions[:2], shipped_ontology)
    graph += rdf_io.sentences_to_graph(sentences, shipped_ontology)
    ontology = rdflib.Graph().parse(data=shipped_ontology.serialize("ttl"), format="turtle")
    report = validate_graph(graph, ontology)
    assert report.conforms, report.text[:2000]


def test_shacl_rejects_a_broken_graph(shipped_ontology, predictions):
    graph = rdf_io.predictions_to_graph(predictions[:1], shipped_ontology)
    annotation = next(graph.subjects(RDF.type, vocab.OA.Annotation))
    graph.set((annotation, vocab.KG.score, rdflib.Literal(1.5, datatype=rdflib.XSD.double)))  # out of [0, 1]
    other = next(s for s in graph.subjects(RDF.type, vocab.OA.Annotation) if s != annotation)
    graph.remove((other, vocab.KG.decision, None))  # a prediction without its decision
    graph.add((other, vocab.OA.hasBody, rdflib.URIRef("https://example.org/not-a-class")))
    report = validate_graph(graph, rdflib.Graph().parse(data=shipped_ontology.serialize("ttl"), format="turtle"))
    assert not report.conforms
    assert str(annotation) in report.text and str(other) in report.text and "not-a-class" in report.text


def test_bad_records_are_reported_and_the_rest_converted(shipped_ontology, predictions):
    bad_label = json.loads(json.dumps(predictions[1]))
    bad_label["labels"][5]["label"], bad_label["labels"][5]["iri"] = "no such organ", None
    bad_score = json.loads(json.dumps(predictions[2]))
    bad_score["labels"][0]["score"] = "high"
    errors: list[str] = []
    graph = rdf_io.predictions_to_graph(
        [predictions[0], bad_label, bad_score, predictions[3]], shipped_ontology, errors
    )
    assert len(errors) == 2
    assert errors[0].startswith("record 2 (deeplesion/1): labels[5]") and "no such organ" in errors[0]
    assert errors[1].startswith("record 3 (deeplesion/2): labels[0].score")
    assert len(set(graph.subjects(RDF.type, vocab.KG.Lesion))) == 2
    with pytest.raises(RecordError, match="record 2"):
        rdf_io.predictions_to_graph([predictions[0], bad_label], shipped_ontology)


def test_checked_and_bulk_paths_write_the_same_triples(shipped_ontology, predictions):
    """An integer score sends a record down the per-item check (which converts it); the
    triples must not depend on which path checked the record."""
    plain = json.loads(json.dumps(predictions[4]))
    varied = json.loads(json.dumps(predictions[4]))
    plain["labels"][0]["score"], varied["labels"][0]["score"] = 1.0, 1
    varied["labels"][1]["iri"] = None  # resolved from the name
    nt = lambda record: sorted("".join(rdf.prediction_ntriples([record], shipped_ontology)).splitlines())  # noqa: E731
    assert nt(plain) == nt(varied)
    assert '"1.0"^^<http://www.w3.org/2001/XMLSchema#double>' in "\n".join(nt(varied))


def test_lesion_ids_cannot_form_iri_syntax(shipped_ontology, predictions):
    record = json.loads(json.dumps(predictions[0]))
    record["lesion_id"] = 'x> <http://evil/> "'
    record["source"]["file"] = "a b>c.png"
    graph = rdf_io.predictions_to_graph([record], shipped_ontology)
    lesions = list(graph.subjects(RDF.type, vocab.KG.Lesion))
    assert [str(s) for s in lesions] == [vocab.DATA + "lesion/x%3E%20%3Chttp%3A/evil%3E%20%22"] or all(
        "<" not in str(s) and " " not in str(s) for s in lesions
    )
    assert str(graph.value(lesions[0], vocab.KG.lesionId)) == record["lesion_id"]


# ----------------------------------------------------------------- canned queries


def _oracle_lesions_with(onto, predictions, label: str) -> set[str]:
    wanted = onto.term(label).name
    return {r["lesion_id"] for r in predictions if any(wanted == n or wanted in onto.ancestors(n) for n in decided(r))}


@pytest.mark.parametrize("backend", ["pyoxigraph", "rdflib"])
def test_canned_queries_agree_with_the_json(request, backend, shipped_ontology, predictions):
    store = request.getfixturevalue("disk_store" if backend == "pyoxigraph" else "rdflib_store")
    onto = shipped_ontology

    for label in ("lung", "lung nodule", "pulmonary nodule", "abdomen"):
        found = set(run_canned(store, "lesions-with-label", onto, label=label).column("lesionId"))
        assert found == _oracle_lesions_with(onto, predictions, label), label
    assert _oracle_lesions_with(onto, predictions, "lung") > _oracle_lesions_with(onto, predictions, "lung nodule")

    rows = run_canned(store, "labels-of-lesion", onto, lesion="deeplesion/4").values()
    expected = {(onto.iri(l["label"]), l["score"], l["threshold"], l["decision"]) for l in predictions[4]["labels"]}
    assert {(r["label"], r["score"], r["threshold"], r["decision"]) for r in rows} == expected
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)

    counts = {r["name"]: r["lesions"] for r in run_canned(store, "label-counts").values()}
    assert counts == dict(Counter(n for r in predictions for n in decided(r)))

    co = {r["name"]: r["lesions"] for r in run_canned(store, "cooccurring-labels", onto, label="liver").values()}
    with_liver = [decided(r) for r in predictions if "liver" in decided(r)]
    assert co == dict(Counter(n for labels in with_liver for n in labels - {"liver"}))

    pairs = {(r["nameA"], r["nameB"]): r["lesions"] for r in run_canned(store, "label-cooccurrence").values()}
    assert sum(pairs.values()) == sum(len(decided(r)) * (len(decided(r)) - 1) // 2 for r in predictions)

    violations = {
        (r["lesionId"], frozenset((r["a"], r["b"]))) for r in run_canned(store, "exclusion-violations").values()
    }
    oracle = {
        (r["lesion_id"], frozenset((onto.iri(a), onto.iri(b))))
        for r in predictions
        for a in decided(r)
        for b in decided(r)
        if b in onto.exclusive(a)
    }
    assert violations == oracle and {lesion for lesion, _ in oracle} == {"deeplesion/0"}

    similar = run_canned(store, "similar-lesions", onto, lesion="deeplesion/7").values()
    assert [(r["neighborId"], r["distance"]) for r in similar] == [
        (n["lesion_id"], n["distance"]) for n in predictions[7]["neighbors"]
    ]


def test_materialised_exclusions_hold_the_closure_of_the_stated_axioms(shipped_ontology):
    store = LesionStore()  # in memory: property paths over all axioms are quick there
    store.load_ontology(shipped_ontology)
    prefix = "PREFIX owl: <http://www.w3.org/2002/07/owl#> PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#> "
    closure = store.query(
        prefix
        + f"""SELECT DISTINCT ?a ?b WHERE {{
        GRAPH <{vocab.GRAPH_ONTOLOGY}> {{ ?x owl:disjointWith ?y }}
        ?a rdfs:subClassOf* ?x . ?b rdfs:subClassOf* ?y }}"""
    )
    stored = store.query(
        prefix + f"SELECT ?a ?b WHERE {{ GRAPH <{vocab.GRAPH_ONTOLOGY_INFERRED}> {{ ?a owl:disjointWith ?b }} }}"
    )
    pairs = lambda result: {frozenset((r["a"], r["b"])) for r in result.values()}  # noqa: E731
    # The ontology's exclusions: the closure of the stated axioms under rdfs:subClassOf*,
    # plus those its composite definitions entail (docs/ontology.md).
    onto = shipped_ontology
    entailed = {frozenset((onto.iri(a), onto.iri(b))) for a in onto.terms for b in onto.exclusive(a)}
    assert pairs(closure) <= pairs(stored) == entailed and len(pairs(stored)) > 4000


def test_training_labels_keep_their_sentence(disk_store, rdflib_store, sentences):
    for store in (disk_store, rdflib_store):
        rows = run_canned(store, "training-labels-of-lesion", lesion="deeplesion/3").values()
        assert {(r["relation"], r["name"]) for r in rows} == {
            ("relevant", "lung nodule"),
            ("relevant", "right lung"),
            ("relevant", "tiny"),
            ("uncertain", "cyst"),
            ("irrelevant", "kidney"),
        }
        assert {r["text"] for r in rows} == {sentences[0]["text"]}
        assert {r["name"]: r["evidence"] for r in rows}["right lung"] == "right lung"


def test_every_canned_query_has_a_file_and_runs_on_both_engines(disk_store, rdflib_store, shipped_ontology):
    for query in CANNED.values():
        params = {p.name: "liver" if p.kind == "label" else "deeplesion/2" for p in query.params}
        a = run_canned(disk_store, query.name, shipped_ontology, **params)
        b = run_canned(rdflib_store, query.name, shipped_ontology, **params)
        assert a.variables == b.variables and canonical(a) == canonical(b), query.name


def test_parameters_are_bound_not_pasted(disk_store, shipped_ontology):
    size = disk_store.count()
    hostile = "deeplesion/1> } ; DROP ALL ; SELECT * { <x"
    assert run_canned(disk_store, "labels-of-lesion", lesion=hostile).rows == []
    assert disk_store.count() == size
    with pytest.raises(LookupError):
        run_canned(disk_store, "lesions-with-label", shipped_ontology, label='lung" } ?x ?y ?z {')
    with pytest.raises(ValueError, match="needs --label"):
        run_canned(disk_store, "lesions-with-label", shipped_ontology)
    # The endpoint's VALUES binding: a hostile literal stays one literal.
    query = "SELECT ?x WHERE { BIND(STRLEN(?x) AS ?n) }"
    bound = bind_values(query, {"x": rdflib.Literal('a" } DROP ALL #\n{')})
    assert disk_store.query(bound).values() == [{"x": 'a" } DROP ALL #\n{'}]
    with pytest.raises(ValueError):
        bind_values(query, {"x": rdflib.URIRef("http://a b")})


_TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)


@settings(max_examples=60, deadline=None)
@given(value=_TEXT, lesion_id=_TEXT.filter(bool))
def test_any_text_binds_as_one_term(value, lesion_id):
    store = LesionStore()  # empty, in memory: the query must parse and return the value unchanged
    result = store.query(bind_values("SELECT ?x WHERE { FILTER(BOUND(?x)) }", {"x": rdflib.Literal(value)}))
    assert result.values() == [{"x": value}]
    lesion = rdflib.URIRef(vocab.lesion_iri(lesion_id))
    result = store.query(bind_values("SELECT ?lesion WHERE { }", {"lesion": lesion}))
    assert result.values() == [{"lesion": str(lesion)}]


def test_store_reopens_read_only(tmp_path, shipped_ontology, predictions):
    path = tmp_path / "store"
    store = LesionStore(path)
    store.load_ontology(shipped_ontology)
    store.load_records(predictions[:3], shipped_ontology)
    store.flush()
    expected = run_canned(store, "label-counts").values()
    del store
    reopened = LesionStore(path, read_only=True)
    assert reopened.has_ontology()
    assert run_canned(reopened, "label-counts").values() == expected
    with pytest.raises(FileNotFoundError, match="kg load"):
        LesionStore(tmp_path / "missing", read_only=True)


# ----------------------------------------------------------------- CLI


def lesanet(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process (the ontology stays cached); returns (code, out, err)."""
    capsys.readouterr()
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse usage errors
        assert isinstance(exc.code, int)  # argparse exits with 2
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cli_folder(tmp_path_factory, predictions) -> Path:
    folder = tmp_path_factory.mktemp("kgcli")
    (folder / "predictions.json").write_text(json.dumps(predictions[:8]))
    (folder / "two.json").write_text(json.dumps(predictions[:2]))
    (folder / "sentences.jsonl").write_text("\n".join(json.dumps(s) for s in make_sentences()))
    return folder


def test_cli_load_rdf_validate_query_and_find(capsys, cli_folder, predictions):
    store = str(cli_folder / "store")
    code, _, err = lesanet(
        capsys,
        "kg",
        "load",
        str(cli_folder / "predictions.json"),
        str(cli_folder / "sentences.jsonl"),
        "--store",
        store,
    )
    assert code == 0 and "loading ontology" in err and "predictions.json" in err, err

    out = cli_folder / "preds.ttl"
    code, _, err = lesanet(capsys, "kg", "rdf", str(cli_folder / "two.json"), "-o", str(out))
    assert code == 0, err
    code, stdout, err = lesanet(capsys, "kg", "validate", str(out), "--with-ontology")
    assert code == 0 and "conforms" in stdout, stdout + err

    code, stdout, err = lesanet(
        capsys, "kg", "find", "--label", "pulmonary nodule", "--store", store, "--format", "json"
    )
    assert code == 0, err
    ids = {b["lesionId"]["value"] for b in json.loads(stdout)["results"]["bindings"]}
    expected = {r["lesion_id"] for r in predictions[:8] if "lung nodule" in decided(r)}
    assert ids == expected and ids

    query = cli_folder / "q.rq"
    query.write_text("PREFIX kg: <https://w3id.org/lesanet/kg#>\nSELECT (COUNT(*) AS ?n) WHERE { ?a kg:score ?s }\n")
    code, stdout, err = lesanet(capsys, "kg", "query", "-f", str(query), "--store", store, "--format", "csv")
    assert code == 0 and stdout.split() == ["n", str(8 * 171)], err
    # The project prefixes are predeclared.
    code, stdout, err = lesanet(capsys, "kg", "query", "ASK { ?a oa:hasBody lesion:lung_nodule }", "--store", store)
    assert code == 0 and stdout.strip() == "true", err
    code, stdout, err = lesanet(capsys, "kg", "find", "--lesion", "deeplesion/3", "--store", store)
    assert code == 0 and "(171 rows)" in stdout, err
    code, stdout, _ = lesanet(capsys, "kg", "find", "--training", "deeplesion/3", "--store", store)
    assert code == 0 and "right lung" in stdout
    code, stdout, _ = lesanet(capsys, "kg", "find", "--list", "--store", store)
    assert all(name in stdout for name in CANNED)


def test_cli_errors_are_one_line(capsys, cli_folder, tmp_path):
    store = str(cli_folder / "store")
    LesionStore(store).flush()  # exists (the load test may not have run first)
    code, _, err = lesanet(capsys, "kg", "find", "--label", "lung nodul", "--store", store)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "lung nodul" in err
    code, _, err = lesanet(capsys, "kg", "query", "SELECT * WHERE { ?s kg:score ?o ", "--store", store)
    assert code == 1 and err.startswith("lesanet: error: SPARQL syntax error")
    code, _, err = lesanet(capsys, "kg", "find", "--label", "lung", "--store", str(tmp_path / "none"))
    assert code == 1 and "kg load" in err
    assert lesanet(capsys, "kg", "find", "--store", store)[0] == 2
    bad = tmp_path / "bad.json"
    bad.write_text(
        '[{"lesion_id": "a/1", "labels": [], "model": {"name": "m"}, "ontology_version": "v"}, {"lesion_id": 3}]'
    )
    code, _, err = lesanet(capsys, "kg", "rdf", str(bad), "-o", str(tmp_path / "bad.nt"))
    assert code == 1 and "record 2" in err and (tmp_path / "bad.nt").exists()
