"""``lesanet kg serve`` under hostile input: strict HTTP, query checks and limits, worker
processes that die instead of the server, and a fuzz run after which it still answers.

Each server is a real ``cli.py kg serve`` subprocess on 127.0.0.1 with short limits.
"""

from __future__ import annotations

import gc
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_kg import make_predictions

from kg.store import LesionStore

ROOT = Path(__file__).resolve().parents[1]
CROSS_PRODUCT = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }"  # ~10^14 rows
COUNT = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"


class Server:
    def __init__(self, store: Path, log: Path, *options: str) -> None:
        command = [sys.executable, str(ROOT / "cli.py"), "kg", "serve", "--store", str(store), "--port", "0", *options]
        self.log = log
        self._log_handle = log.open("w")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log_handle, text=True)
        assert self.process.stdout is not None  # stdout=PIPE
        line = self.process.stdout.readline()
        if not line.startswith("serving "):
            self.stop()
            raise RuntimeError(f"kg serve did not start: {line!r} {log.read_text()}")
        self.url = line.split()[1]
        port = urllib.parse.urlsplit(self.url).port
        assert port is not None
        self.port = port

    def query(self, text: str, timeout: float = 30) -> tuple[int, str]:
        data = urllib.parse.urlencode({"query": text}).encode()
        request = urllib.request.Request(
            self.url, data=data, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def count(self) -> int:
        status, body = self.query(COUNT)
        assert status == 200, body
        return int(json.loads(body)["results"]["bindings"][0]["n"]["value"])

    def raw(self, data: bytes, timeout: float = 20, half_close: bool = True) -> bytes:
        """Send bytes as they are; the server's whole answer (until it closes)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            try:
                sock.sendall(data)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server may refuse and close before reading it all
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except ConnectionResetError:
                pass
            return b"".join(chunks)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_handle.close()


def status_of(answer: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(match.group(1)) if match else None


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, shipped_ontology) -> Path:
    path = tmp_path_factory.mktemp("serve") / "store"
    store = LesionStore(path)
    store.load_ontology(shipped_ontology)
    store.load_records(make_predictions(shipped_ontology, n=8, seed=3), shipped_ontology)
    store.flush()
    del store
    gc.collect()  # release the database before servers open it
    return path


@pytest.fixture(scope="module")
def server(store_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-log") / "stderr.txt"
    running = Server(store_dir, log, "--timeout", "2", "--max-rows", "1000", "--workers", "2")
    yield running
    running.stop()
    assert "internal error" not in log.read_text() and "Traceback" not in log.read_text()


def test_hostile_queries_are_refused_with_the_limit_they_hit(server):
    expected = server.count()
    cases = {
        "deep": (
            "SELECT * WHERE " + "{" * 5000 + "}" * 5000,
            400,
            "nests brackets 5000 deep, over the limit of 100 (--max-depth)",
        ),
        "service": ("SELECT * WHERE { SERVICE <http://127.0.0.1:9/sparql> { ?s ?p ?o } }", 403, "SERVICE is refused"),
        "service-lowercase": ("select * { service <http://example.org/> { ?s ?p ?o } }", 403, "--allow-service"),
        "huge": ("ASK { " + "?s ?p ?o . " * 30_000 + "}", 413, "(--max-query-chars)"),
        "rows": ("SELECT * WHERE { ?s ?p ?o }", 422, "more than 1,000 rows (--max-rows)"),
        "triples": ("CONSTRUCT WHERE { ?s ?p ?o }", 422, "more than 1,000 triples (--max-rows)"),
        "syntax": ("SELECT * WHERE {", 400, "SPARQL syntax error"),
        "nul": ("ASK {}\x00", 400, "NUL"),
    }
    for name, (text, status, reason) in cases.items():
        got, body = server.query(text)
        assert (got, reason in body) == (status, True), (name, got, body)
    # A cross product keeps the engine busy for hours: stopped at the time limit.
    started = time.monotonic()
    got, body = server.query(CROSS_PRODUCT)
    assert got == 503 and "time limit of 2 s (--timeout)" in body, body
    assert time.monotonic() - started < 10
    assert server.count() == expected  # the replaced worker answers


def test_a_service_clause_inside_strings_comments_or_names_is_not_refused(server):
    text = 'SELECT ?SERVICE WHERE { BIND("SERVICE <http://x/>" AS ?SERVICE) } # SERVICE <http://y/>\n'
    got, body = server.query(text)
    assert got == 200, body


MALFORMED: dict[str, tuple[bytes, int]] = {
    "length-abc": (b"POST /query HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n", 400),
    "length-negative": (b"POST /query HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\nx", 400),
    "length-two-values": (
        b"POST /query HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    "length-huge": (b"POST /query HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999\r\n\r\n", 413),
    "chunked": (b"POST /query HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
    "body-not-utf8": (
        b"POST /query HTTP/1.1\r\nHost: h\r\nContent-Type: application/sparql-query\r\nContent-Length: 4\r\n\r\n\xff\xfe\xfd\xfc",
        400,
    ),
    "form-not-utf8": (
        b"POST /query HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n\r\nquery=\xc3(",
        400,
    ),
    "url-not-utf8": (b"GET /query?query=%ff%fe HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "two-queries": (b"GET /query?query=ASK%7B%7D&query=ASK%7B%7D HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "no-query": (b"GET /query HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "unknown-type": (
        b"POST /query HTTP/1.1\r\nHost: h\r\nContent-Type: image/png\r\nContent-Length: 3\r\n\r\nabc",
        415,
    ),
    "bad-graph": (b"GET /query?query=ASK%7B%7D&default-graph-uri=not%20an%20iri HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "too-many-fields": (
        b"GET /query?" + b"&".join(b"a%d=1" % i for i in range(100)) + b" HTTP/1.1\r\nHost: h\r\n\r\n",
        400,
    ),
    "wrong-method": (b"GET /update?update=CLEAR%20ALL HTTP/1.1\r\nHost: h\r\n\r\n", 405),
    "update-refused-before-body": (b"POST /update HTTP/1.1\r\nHost: h\r\nContent-Length: 60000000\r\n\r\n", 403),
    "unknown-path": (b"GET /../../etc/passwd HTTP/1.1\r\nHost: h\r\n\r\n", 404),
    "unknown-method": (b"BREW /query HTTP/1.1\r\nHost: h\r\n\r\n", 501),
    "garbage-line": (b"\xff\xfe\x00garbage\r\n\r\n", 400),
    "long-line": (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    "many-headers": (b"GET /query HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431),
    "bad-version": (b"GET /query HTTP/9.9\r\n\r\n", 505),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_http_gets_a_status_and_a_reason(server, name):
    data, status = MALFORMED[name]
    answer = server.raw(data)
    assert status_of(answer) == status, (name, answer[:300])
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert body.strip() and b"<html" not in body.lower(), answer[:300]


def test_a_client_that_leaves_has_its_query_stopped(store_dir, tmp_path):
    log = tmp_path / "stderr.txt"
    slow = Server(store_dir, log, "--timeout", "120", "--workers", "2")
    try:
        body = urllib.parse.urlencode({"query": CROSS_PRODUCT}).encode()
        request = (
            b"POST /query HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        for _ in range(2):  # occupy both workers, then leave
            with socket.create_connection(("127.0.0.1", slow.port)) as sock:
                sock.sendall(request)
                time.sleep(0.5)
        started = time.monotonic()
        assert slow.count() > 0  # both workers were freed long before the 120 s limit
        assert time.monotonic() - started < 20
        deadline = time.monotonic() + 10
        while log.read_text().count("client left; its query was stopped") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert log.read_text().count("client left; its query was stopped") == 2
    finally:
        slow.stop()


def test_the_server_survives_an_engine_crash(store_dir, tmp_path):
    # With the depth check lifted, a 5,000-deep query segfaults Oxigraph: its worker dies, the server does not.
    log = tmp_path / "stderr.txt"
    lax = Server(store_dir, log, "--max-depth", "1000000", "--workers", "1")
    try:
        expected = lax.count()
        got, body = lax.query("SELECT * WHERE " + "{" * 5000 + "}" * 5000)
        assert got == 500 and "crashed on this query (signal 11 SIGSEGV)" in body, body
        assert lax.count() == expected
    finally:
        lax.stop()


def test_kg_query_cli_turns_a_crash_into_a_clear_error(store_dir):
    deep = "SELECT * WHERE " + "{" * 5000 + "}" * 5000
    command = [sys.executable, str(ROOT / "cli.py"), "kg", "query", "--store", str(store_dir)]
    checked = subprocess.run([*command, deep], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 1 and "over the limit of 100 (--max-depth)" in checked.stderr
    crashed = subprocess.run([*command, deep, "--max-depth", "100000"], capture_output=True, text=True, timeout=120)
    assert crashed.returncode == 1, crashed
    assert crashed.stderr.strip() == "lesanet: error: the SPARQL engine crashed on this query (signal 11 SIGSEGV)"
    slow = subprocess.run([*command, CROSS_PRODUCT, "--timeout", "1"], capture_output=True, text=True, timeout=120)
    assert slow.returncode == 1 and "time limit of 1 s (--timeout)" in slow.stderr
    ok = subprocess.run([*command, COUNT, "--format", "csv"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.splitlines()[0] == "n", ok


# ----------------------------------------------------------------- fuzz

_METHODS = st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"G\xffT", b""])
_PATHS = st.sampled_from(
    [b"/query", b"/update", b"/", b"/query?query=ASK%7B%7D", b"/query?query=%", b"*", b"/%00", b"//query"]
)
_HEADER_NAMES = st.sampled_from(
    [
        b"Content-Length",
        b"Content-Type",
        b"Transfer-Encoding",
        b"Accept",
        b"Authorization",
        b"Expect",
        b"Connection",
        b"X",
    ]
)
_HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            b"0",
            b"-1",
            b"abc",
            b"1e9",
            b"18446744073709551617",
            b" 5",
            b"chunked",
            b"application/sparql-query",
            b"application/x-www-form-urlencoded",
            b"text/csv",
            b"Bearer x",
            b"100-continue",
            b"close",
        ]
    ),
    st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
)
_QUERY_BODIES = st.sampled_from(
    [
        b"query=ASK%7B%7D",
        b"query=SELECT+*+%7B%3Fs+%3Fp+%3Fo%7D",
        b"ASK {",
        b"\xff\xfe",
        b"query=" + b"%7B" * 3000,
        b"query=SELECT * { SERVICE <http://127.0.0.1:1/> {} }",
        b"update=CLEAR+ALL",
        b"query=%E2%82",
        b"",
    ]
)


@st.composite
def hostile_requests(draw) -> bytes:
    line = (
        draw(_METHODS) + b" " + draw(_PATHS) + b" " + draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b""]))
    )
    headers = b"".join(
        draw(_HEADER_NAMES) + b": " + draw(_HEADER_VALUES) + b"\r\n" for _ in range(draw(st.integers(0, 5)))
    )
    body = draw(st.one_of(_QUERY_BODIES, st.binary(max_size=200)))
    request = line + b"\r\n" + headers + b"\r\n" + body
    if draw(st.booleans()):  # flip some bytes anywhere
        data = bytearray(request)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        request = bytes(data)
    return request


FUZZ_CASES = 300


@settings(max_examples=FUZZ_CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=hostile_requests())
def test_fuzz_requests_never_take_the_server_down(fuzz_server, request):
    answer = fuzz_server.raw(request, timeout=20)
    status = status_of(answer)
    # No answer at all is allowed only where HTTP gives nothing to answer (an empty line).
    assert status is not None or not request.split(b"\r\n", 1)[0].strip(), (request[:200], answer[:200])
    assert status != 500 or b"internal error" not in answer, (request[:200], answer[:300])
    assert fuzz_server.process.poll() is None


@pytest.fixture(scope="module")
def fuzz_server(store_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("fuzz-log") / "stderr.txt"
    running = Server(store_dir, log, "--timeout", "2", "--max-rows", "1000")
    expected = running.count()
    yield running
    try:
        text = log.read_text()
        assert running.process.poll() is None, "the server died during the fuzz run"
        assert running.count() == expected  # still answers a good query, same data
        assert "internal error" not in text and "Traceback" not in text, text[-2000:]
    finally:
        running.stop()
