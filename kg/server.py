"""``lesanet kg serve``: a SPARQL 1.1 Protocol endpoint over a store, on 127.0.0.1 only.

``GET/POST /query`` answers queries (JSON or CSV results; N-Triples for
CONSTRUCT/DESCRIBE). ``POST /update`` is refused (403) unless the server was started
with a token, and then needs ``Authorization: Bearer <token>``.

Hostile requests cost a request, never the server:

* the HTTP layer parses strictly (``Content-Length``, UTF-8, sizes) and answers every
  malformed request with a 4xx and a one-line reason; at most ``max_connections``
  connections are served at once, idle ones time out;
* every query is checked first (:func:`kg.guard.check_sparql`: size, nesting depth,
  ``SERVICE``) and then runs in a worker process (:mod:`kg.pool`) under a time, row,
  byte and memory limit; a client that leaves has its query killed; a worker that
  crashes is replaced.

Without a token the workers open the store read-only (``workers`` of them, queries in
parallel); with a token one worker holds it read-write and runs queries and updates in
turn, since the store allows a single writer and no reader beside it.

Routing is a table, one handler per path (:data:`ROUTES`); :func:`serve` adds the
lesion browser's pages (:mod:`kg.web`) to it when given them.
"""

from __future__ import annotations

import hmac
import re
import select
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import pyoxigraph as ox

from kg.errors import KgError
from kg.guard import DEFAULT_LIMITS, QueryLimits, QueryRejected, check_sparql
from kg.pool import ClientGone, QueryFailed, WorkerPool, query_request

HOST = "127.0.0.1"
_TEXT = "text/plain; charset=utf-8"
_FORM = "application/x-www-form-urlencoded"
_MAX_FIELDS = 64  # form/URL parameters per request


@dataclass(frozen=True)
class ServerConfig:
    """Limits of ``kg serve`` (the CLI states the defaults in ``--help``)."""

    limits: QueryLimits = DEFAULT_LIMITS
    workers: int = 2  # query worker processes (read-only mode)
    max_connections: int = 32  # connections served at once; more get 503
    idle_timeout_s: float = 30.0  # a connection that sends nothing for this long is closed
    max_update_bytes: int = 64 << 20  # an update request body (token holders only)

    def __post_init__(self) -> None:
        for name in ("workers", "max_connections", "max_update_bytes"):
            if getattr(self, name) < 1:
                raise KgError(f"kg serve: {name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    @property
    def max_query_bytes(self) -> int:
        # A %-encoded form of a query at the character limit, plus the other fields.
        return 3 * 4 * self.limits.max_chars + 64 * 1024


# ----------------------------------------------------------------- requests, responses


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, list[str]]
    direct: str | None  # an application/sparql-query or -update body
    headers: Message
    client_gone: Callable[[], bool]

    def single(self, name: str) -> str | None:
        values = self.params.get(name) or []
        if len(values) > 1:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"give the {name!r} parameter once, not {len(values)} times")
        return values[0] if values else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = _TEXT
    headers: list[tuple[str, str]] = field(default_factory=list)


class HttpError(Exception):
    """A request answered with an error status and a one-line reason. ``close``: the
    request body was not read, so the connection cannot carry another request."""

    def __init__(
        self, status: int, message: str, close: bool = False, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = int(status)
        self.close = close
        self.headers = headers or []

    def response(self) -> Response:
        return Response(self.status, (str(self) + "\n").encode("utf-8"), _TEXT, self.headers)


@dataclass(frozen=True)
class Route:
    handler: Callable[[SparqlServer, Request], Response]
    methods: tuple[str, ...]
    max_body: Callable[[SparqlServer], int]
    # Runs on the headers before the body is read (authorisation), so a refused client
    # cannot make the server read a large body.
    admit: Callable[[SparqlServer, Message], None] | None = None


# ----------------------------------------------------------------- the server


class SparqlServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        pool: WorkerPool,
        port: int,
        token: str | None,
        config: ServerConfig,
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        self.pool = pool
        self.token = token
        self.config = config
        self.routes: dict[str, Route] = dict(ROUTES if routes is None else routes)
        self._slots = threading.BoundedSemaphore(config.max_connections)
        super().__init__((HOST, port), _Handler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/query"

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            message = f"the server is at its limit of {self.config.max_connections} connections; retry later\n".encode()
            try:
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(message), message)
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # One line, no traceback: a request must never spill the server's internals.
        exc = sys.exc_info()[1]
        _log(f"kg serve: internal error with {client_address[0]}: {type(exc).__name__}: {_printable(str(exc))[:200]}")


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _log(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")


class _Handler(BaseHTTPRequestHandler):
    server: SparqlServer
    protocol_version = "HTTP/1.1"
    # The stdlib's own refusals (bad request line, too many headers…): one plain line too.
    error_message_format = "%(message)s (%(code)d)\n"
    error_content_type = _TEXT
    # Answer a request line without a version with a status line too (no HTTP/0.9).
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        self.timeout = self.server.config.idle_timeout_s  # type: ignore[misc]  # socket timeout of this connection
        super().setup()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        _log(f"kg serve: {self.address_string()} {_printable(format % args)}")

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch("POST")

    # -- one request

    def _dispatch(self, method: str) -> None:
        self._body_read = False
        try:
            response = self._route(method)
        except HttpError as exc:
            response = exc.response()
            if exc.close or not self._body_read:
                self.close_connection = True  # an unread body would be taken for the next request
        except ClientGone:
            self.log_message("client left; its query was stopped")
            self.close_connection = True
            return
        except Exception as exc:  # noqa: BLE001 - one line in the log, a 500 to the client
            _log(
                f"kg serve: internal error on {_printable(self.requestline)[:200]}: {type(exc).__name__}: {_printable(str(exc))[:200]}"
            )
            response = Response(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(exc).__name__})\n".encode())
            self.close_connection = True
        self._send(response)

    def _route(self, method: str) -> Response:
        try:
            split = urllib.parse.urlsplit(self.path)
        except ValueError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"malformed request target: {exc}") from exc
        route = self.server.routes.get(split.path)
        if route is None:
            browser = " or the lesion browser at /" if "/" in self.server.routes else ""
            raise HttpError(
                HTTPStatus.NOT_FOUND, f"no such path; use {' or '.join(ROUTES)} (SPARQL 1.1 Protocol){browser}"
            )
        if method not in route.methods:
            raise HttpError(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{split.path} takes {' or '.join(route.methods)}",
                headers=[("Allow", ", ".join(route.methods))],
            )
        if route.admit is not None:
            route.admit(self.server, self.headers)
        body = self._read_body(route.max_body(self.server))
        self._body_read = True
        params = _decode_params(split.query, "the URL query string")
        direct = None
        if body:
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if content_type == _FORM:
                for key, values in _decode_params(_utf8(body, "the form body"), "the form body").items():
                    params.setdefault(key, []).extend(values)
            elif content_type in ("application/sparql-query", "application/sparql-update"):
                direct = _utf8(body, "the request body")
            else:
                raise HttpError(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    f"unsupported Content-Type {content_type or '(none)'!r}; use {_FORM}, application/sparql-query "
                    "or application/sparql-update",
                )
        request = Request(method, split.path, params, direct, self.headers, self._client_gone)
        return route.handler(self.server, request)

    def _read_body(self, limit: int) -> bytes:
        if self.headers.get("Transfer-Encoding") is not None:
            raise HttpError(
                HTTPStatus.LENGTH_REQUIRED, "chunked request bodies are not supported; send Content-Length", close=True
            )
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return b""
        values = {value.strip() for value in lengths}
        if len(values) != 1 or not _CONTENT_LENGTH.fullmatch(next(iter(values))):
            shown = _printable(", ".join(lengths))[:60]
            raise HttpError(
                HTTPStatus.BAD_REQUEST, f"Content-Length must be one non-negative integer, got {shown!r}", close=True
            )
        length = int(next(iter(values)))
        if length > limit:
            raise HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body of {length:,} bytes is over the limit of {limit:,}",
                close=True,
            )
        try:
            body = self.rfile.read(length)
        except TimeoutError as exc:
            raise HttpError(HTTPStatus.REQUEST_TIMEOUT, "the request body did not arrive in time", close=True) from exc
        if len(body) < length:
            raise ClientGone()  # the client closed before sending the whole body
        return body

    def _client_gone(self) -> bool:
        """True when the client has closed its connection (a readable socket at EOF)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(response.body)
        except OSError:
            self.close_connection = True  # the client went away while we answered


def _utf8(body: bytes, what: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{what} is not UTF-8 (byte {exc.start}: {exc.reason})") from exc


def _decode_params(text: str, what: str) -> dict[str, list[str]]:
    try:
        return urllib.parse.parse_qs(text, errors="strict", max_num_fields=_MAX_FIELDS)
    except UnicodeDecodeError as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{what} is not UTF-8 after %-decoding ({exc.reason})") from exc
    except ValueError as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{what}: {exc}") from exc


# ----------------------------------------------------------------- routes


def _run(server: SparqlServer, request: Request, work: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    try:
        return server.pool.run(work, server.config.limits, request.client_gone)
    except QueryFailed as exc:
        raise HttpError(exc.status, str(exc)) from exc


def answer_query(server: SparqlServer, request: Request) -> Response:
    """``/query``: SPARQL 1.1 Protocol query operation."""
    text = request.single("query")
    if text is not None and request.direct is not None:
        raise HttpError(HTTPStatus.BAD_REQUEST, "give the query as the 'query' parameter or as the body, not both")
    text = text if text is not None else request.direct
    if not text:
        raise HttpError(HTTPStatus.BAD_REQUEST, "missing the 'query' parameter")
    try:
        check_sparql(text, server.config.limits)
    except QueryRejected as exc:
        raise HttpError(exc.status, str(exc)) from exc
    graphs = request.params.get("default-graph-uri") or None
    for graph in graphs or []:
        try:
            ox.NamedNode(graph)
        except ValueError as exc:
            raise HttpError(
                HTTPStatus.BAD_REQUEST, f"default-graph-uri is not an IRI: {_printable(graph)[:100]!r}"
            ) from exc
    accept = request.headers.get("Accept") or ""
    fmt = "csv" if "text/csv" in accept and "json" not in accept else "json"
    limits = server.config.limits
    header, body = _run(server, request, query_request(text, limits, fmt, graphs))
    if not header.get("ok"):
        raise HttpError(int(header.get("status", 500)), str(header.get("message")))
    return Response(HTTPStatus.OK, body, str(header["content_type"]))


def admit_update(server: SparqlServer, headers: Message) -> None:
    if server.token is None:
        raise HttpError(HTTPStatus.FORBIDDEN, "updates are refused: this endpoint is read-only (start it with a token)")
    given = headers.get("Authorization") or ""
    expected = f"Bearer {server.token}"
    if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8")):
        raise HttpError(
            HTTPStatus.UNAUTHORIZED,
            "updates need 'Authorization: Bearer <token>'",
            headers=[("WWW-Authenticate", "Bearer")],
        )


def apply_update(server: SparqlServer, request: Request) -> Response:
    """``/update``: SPARQL 1.1 Protocol update operation (token holders only)."""
    text = request.single("update")
    text = text if text is not None else request.direct
    if not text:
        raise HttpError(HTTPStatus.BAD_REQUEST, "missing the 'update' parameter")
    limits = server.config.limits
    try:
        # Token holders may send long INSERT DATA: the size limit is the body's.
        check_sparql(
            text,
            QueryLimits(
                max_chars=server.config.max_update_bytes, max_depth=limits.max_depth, allow_service=limits.allow_service
            ),
            update=True,
        )
    except QueryRejected as exc:
        raise HttpError(exc.status, str(exc)) from exc
    header, _ = _run(server, request, {"op": "update", "text": text})
    if not header.get("ok"):
        raise HttpError(int(header.get("status", 500)), str(header.get("message")))
    return Response(HTTPStatus.NO_CONTENT)


ROUTES: dict[str, Route] = {
    "/query": Route(answer_query, ("GET", "POST"), lambda server: server.config.max_query_bytes),
    "/update": Route(apply_update, ("POST",), lambda server: server.config.max_update_bytes, admit_update),
}


# ----------------------------------------------------------------- entry point


def serve(
    store_path: str | Path,
    port: int,
    token: str | None,
    announce: TextIO = sys.stdout,
    config: ServerConfig = ServerConfig(),
    pages: Mapping[str, Route] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``store_path`` until interrupted; prints the query URL once listening.
    ``pages``: more routes beside the endpoint's (the lesion browser, :mod:`kg.web`);
    ``on_ready(url)`` is called once the socket listens (``kg serve --open``)."""
    path = Path(store_path)
    if not path.is_dir():
        raise FileNotFoundError(f"no store at {path}; create it with `lesanet kg load FILE --store {path}`")
    read_write = token is not None
    pool = WorkerPool(path, 1 if read_write else config.workers, read_write=read_write, log=_log)
    try:
        pool.wait_ready()
        server = SparqlServer(pool, port, token, config, {**ROUTES, **(pages or {})})
        limits = config.limits
        mode = "read-write with token, 1 worker" if read_write else f"read-only, {pool.size} workers"
        print(
            f"serving {server.url} ({mode}); updates at http://{HOST}:{server.server_address[1]}/update; "
            f"limits per query: {limits.timeout_s:g} s, {limits.max_rows:,} rows, {limits.max_bytes >> 20} MiB, "
            f"{limits.max_memory_mib} MiB memory, SERVICE {'allowed' if limits.allow_service else 'refused'}",
            file=announce,
            flush=True,
        )
        if pages:
            print(f"lesion browser at http://{HOST}:{server.server_address[1]}/", file=announce, flush=True)
        if on_ready is not None:
            on_ready(f"http://{HOST}:{server.server_address[1]}/")
        try:
            server.serve_forever()
        finally:
            server.server_close()
    finally:
        pool.close()
