"""``lesanet kg serve``: a SPARQL 1.1 Protocol endpoint over a store, on 127.0.0.1 only.

``GET/POST /query`` answers queries (JSON, CSV or TSV results; N-Triples for
CONSTRUCT/DESCRIBE). ``POST /update`` is refused (403) unless the server was started
with a token, and then needs ``Authorization: Bearer <token>``. Without a token the store
is opened read-only, so a running server never blocks on or changes the data.
"""

from __future__ import annotations

import hmac
import sys
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TextIO

from kg.results import QueryResult
from kg.store import LesionStore

HOST = "127.0.0.1"
MAX_BODY_BYTES = 64 << 20


class SparqlServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store: LesionStore, port: int, token: str | None) -> None:
        self.store = store
        self.token = token
        self.update_lock = threading.Lock()
        super().__init__((HOST, port), _Handler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/query"


class _Handler(BaseHTTPRequestHandler):
    server: SparqlServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        sys.stderr.write(f"kg serve: {self.address_string()} {format % args}\n")

    # -- plumbing

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, (message + "\n").encode("utf-8"), "text/plain; charset=utf-8")

    def _read_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY_BYTES} bytes")
            return None
        return self.rfile.read(length)

    def _params(self, body: bytes | None) -> tuple[dict[str, list[str]], str | None]:
        """Form/URL parameters, and a direct ``application/sparql-*`` body if any."""
        params = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        direct = None
        if body:
            if content_type == "application/x-www-form-urlencoded":
                for key, values in urllib.parse.parse_qs(body.decode("utf-8")).items():
                    params.setdefault(key, []).extend(values)
            elif content_type in ("application/sparql-query", "application/sparql-update"):
                direct = body.decode("utf-8")
        return params, direct

    # -- routes

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        route = urllib.parse.urlsplit(self.path).path
        if route != "/query":
            self._error(HTTPStatus.NOT_FOUND, "use /query (SPARQL 1.1 Protocol)")
            return
        params, _ = self._params(None)
        self._answer(params.get("query", [None])[0], params)

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        route = urllib.parse.urlsplit(self.path).path
        body = self._read_body()
        if body is None:
            return
        params, direct = self._params(body)
        if route == "/query":
            self._answer(direct or params.get("query", [None])[0], params)
        elif route == "/update":
            self._update(direct or params.get("update", [None])[0])
        else:
            self._error(HTTPStatus.NOT_FOUND, "use /query or /update (SPARQL 1.1 Protocol)")

    def _answer(self, query: str | None, params: dict[str, list[str]]) -> None:
        if not query:
            self._error(HTTPStatus.BAD_REQUEST, "missing the 'query' parameter")
            return
        try:
            result = self.server.store.query(query, graphs=params.get("default-graph-uri") or None)
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc).splitlines()[0])
            return
        body, content_type = _negotiate(result, self.headers.get("Accept") or "")
        self._send(HTTPStatus.OK, body, content_type)

    def _update(self, update: str | None) -> None:
        if self.server.token is None:
            self._error(HTTPStatus.FORBIDDEN, "updates are refused: this endpoint is read-only (start it with a token)")
            return
        given = self.headers.get("Authorization") or ""
        expected = f"Bearer {self.server.token}"
        if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
            self._error(HTTPStatus.UNAUTHORIZED, "updates need 'Authorization: Bearer <token>'")
            return
        if not update:
            self._error(HTTPStatus.BAD_REQUEST, "missing the 'update' parameter")
            return
        try:
            with self.server.update_lock:
                self.server.store.update(update)
        except (SyntaxError, ValueError, OSError) as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc).splitlines()[0])
            return
        self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")


def _negotiate(result: QueryResult, accept: str) -> tuple[bytes, str]:
    if result.ntriples is not None:
        return result.ntriples.encode("utf-8"), "application/n-triples"
    if "text/csv" in accept and "json" not in accept:
        return result.to_csv().encode("utf-8"), "text/csv; charset=utf-8"
    return result.to_json().encode("utf-8"), "application/sparql-results+json"


def serve(store_path: str | Path, port: int, token: str | None, announce: TextIO = sys.stdout) -> None:
    """Serve ``store_path`` until interrupted; prints the query URL once listening."""
    store = LesionStore(store_path, read_only=token is None)
    server = SparqlServer(store, port, token)
    mode = "read-write with token" if token else "read-only"
    print(f"serving {server.url} ({mode}); updates at http://{HOST}:{server.server_address[1]}/update", file=announce, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
