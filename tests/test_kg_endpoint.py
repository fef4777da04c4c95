"""The ``--endpoint`` client against real HTTP SPARQL 1.1 servers on 127.0.0.1.

* Oxigraph server (the ``oxigraph`` PyPI package's binary, an independent
  implementation): uploads with SPARQL updates, then every canned query must answer
  exactly as the embedded store does.
* ``lesanet kg serve``: read-only by default (updates refused), token-gated updates.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_kg import canonical, decided, lesanet, make_predictions, make_sentences

from kg import rdf, vocab
from kg.canned import CANNED, run_canned
from kg.endpoint import EndpointError, SparqlEndpoint
from kg.store import LesionStore

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    probe = url + "?query=ASK%7B%7D"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}"
            )
        try:
            with urllib.request.urlopen(probe, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not answer within {seconds} s")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _oxigraph_binary() -> str:
    found = shutil.which("oxigraph", path=str(Path(sys.executable).parent)) or shutil.which("oxigraph")
    if found:
        return found
    message = "the Oxigraph server binary is missing: pip install -e '.[test]' (package 'oxigraph')"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def data(shipped_ontology):
    predictions = make_predictions(shipped_ontology, n=10, seed=1)
    sentences = make_sentences()
    local = LesionStore()
    local.load_ontology(shipped_ontology)
    local.load_records(predictions, shipped_ontology)
    local.load_sentences(sentences, shipped_ontology)
    return predictions, sentences, local


@pytest.fixture(scope="module")
def oxigraph_server(tmp_path_factory):
    port = _free_port()
    location = tmp_path_factory.mktemp("oxigraph") / "db"
    process = subprocess.Popen(
        [_oxigraph_binary(), "serve", "--location", str(location), "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/query"
    try:
        _wait_until_up(url, process)
        yield url
    finally:
        _stop(process)


def _params(query) -> dict[str, str]:
    return {p.name: "liver" if p.kind == "label" else "deeplesion/3" for p in query.params}


def test_canned_queries_on_oxigraph_server_match_the_embedded_store(oxigraph_server, data, shipped_ontology):
    predictions, sentences, local = data
    endpoint = SparqlEndpoint(oxigraph_server)
    assert endpoint.update_url.endswith("/update")
    endpoint.load_ontology(shipped_ontology)
    sent = endpoint.load_ntriples(rdf.prediction_ntriples(predictions, shipped_ontology), lines_per_request=5000)
    endpoint.load_ntriples(rdf.sentence_ntriples(sentences, shipped_ontology), vocab.GRAPH_TRAINING_LABELS)
    assert sent == "".join(rdf.prediction_ntriples(predictions, shipped_ontology)).count("\n")

    for query in CANNED.values():
        remote = run_canned(endpoint, query.name, shipped_ontology, **_params(query))
        here = run_canned(local, query.name, shipped_ontology, **_params(query))
        assert remote.variables == here.variables, query.name
        assert canonical(remote) == canonical(here), query.name
    counts = {r["name"]: r["lesions"] for r in run_canned(endpoint, "label-counts").values()}
    assert sum(counts.values()) == sum(len(decided(r)) for r in predictions)

    hostile = "deeplesion/1> } ; DROP ALL ; SELECT * { <x"
    assert run_canned(endpoint, "labels-of-lesion", lesion=hostile).rows == []
    assert run_canned(endpoint, "label-counts").values()  # nothing was dropped


def test_cli_load_and_find_through_an_endpoint(capsys, oxigraph_server, data, tmp_path):
    predictions = data[0]
    path = tmp_path / "predictions.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in predictions))
    code, _, err = lesanet(capsys, "kg", "load", str(path), "--endpoint", oxigraph_server)
    assert code == 0, err
    code, out, err = lesanet(
        capsys, "kg", "find", "--label", "lung nodule", "--endpoint", oxigraph_server, "--format", "csv"
    )
    assert code == 0, err
    ids = {line.split(",")[2] for line in out.strip().splitlines()[1:]}
    assert ids == {r["lesion_id"] for r in predictions if "lung nodule" in decided(r)}
    code, out, err = lesanet(capsys, "kg", "query", "ASK { ?a kg:score ?s }", "--endpoint", oxigraph_server)
    assert code == 0 and out.strip() == "true", err
    code, _, err = lesanet(capsys, "kg", "query", "SELECT * WHERE {", "--endpoint", oxigraph_server)
    assert code == 1 and "HTTP 400" in err
    code, _, err = lesanet(capsys, "kg", "query", "ASK {}", "--endpoint", f"http://127.0.0.1:{_free_port()}/query")
    assert code == 1 and "cannot reach" in err


def _start_kg_serve(store: Path, token_file: Path | None = None) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, str(ROOT / "cli.py"), "kg", "serve", "--store", str(store), "--port", "0"]
    if token_file is not None:
        command += ["--token-file", str(token_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None  # stdout=PIPE
    line = process.stdout.readline()  # "serving http://127.0.0.1:PORT/query (...)"
    if not line.startswith("serving "):
        _stop(process)
        raise RuntimeError(f"kg serve did not start: {line!r}")
    url = line.split()[1]
    _wait_until_up(url, process)
    return process, url


def test_kg_serve_is_read_only_unless_a_token_is_set(tmp_path, data, shipped_ontology):
    predictions, sentences, local = data
    path = tmp_path / "store"
    store = LesionStore(path)
    store.load_ontology(shipped_ontology)
    store.load_records(predictions, shipped_ontology)
    store.flush()
    del store
    gc.collect()  # release the database before a server opens it

    process, url = _start_kg_serve(path)
    try:
        endpoint = SparqlEndpoint(url)
        for name in ("lesions-with-label", "labels-of-lesion", "exclusion-violations", "similar-lesions"):
            query = CANNED[name]
            remote = run_canned(endpoint, name, shipped_ontology, **_params(query))
            assert canonical(remote) == canonical(run_canned(local, name, shipped_ontology, **_params(query))), name
        with pytest.raises(EndpointError, match="HTTP 403"):
            endpoint.update("CLEAR ALL")
    finally:
        _stop(process)

    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    process, url = _start_kg_serve(path, token_file)
    try:
        with pytest.raises(EndpointError, match="HTTP 401"):
            SparqlEndpoint(url, token="wrong").update("CLEAR ALL")
        writer = SparqlEndpoint(url, token="s3cret-token")
        writer.load_ntriples(rdf.sentence_ntriples(sentences, shipped_ontology), vocab.GRAPH_TRAINING_LABELS)
        rows = run_canned(writer, "training-labels-of-lesion", lesion="deeplesion/3").values()
        assert {r["name"] for r in rows} >= {"lung nodule", "right lung"}
    finally:
        _stop(process)
