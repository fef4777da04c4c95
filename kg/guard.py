"""Checks on user SPARQL before it reaches the engine, and the limits it then runs under.

:func:`check_sparql` scans the text with a small SPARQL lexer (strings, IRIs, comments,
names) and refuses, with the reason, a query that is too long, nests brackets too deep
(Oxigraph's recursive parser overflows the stack at a few thousand levels and takes the
process with it), or reaches out with ``SERVICE`` (or, for updates, ``LOAD``) unless
allowed: a read-only endpoint must not send HTTP requests for its clients.

The check is the first line of defence; queries still run in a worker process
(:mod:`kg.pool`) that is killed when it passes :class:`QueryLimits`, so a query the
lexer misjudges can cost a worker, never the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kg.errors import KgError
from ontology.errors import LesanetError

_MIB = 1 << 20


@dataclass(frozen=True)
class QueryLimits:
    """What one user query may use. The defaults are stated in ``--help`` and in every
    refusal, which names the option that raises the limit."""

    max_chars: int = 256 * 1024  # query text length
    max_depth: int = 100  # nesting of { } ( ) [ ]; real queries stay under 20
    timeout_s: float = 30.0  # wall time of one query in its worker
    max_rows: int = 100_000  # result rows (or triples for CONSTRUCT/DESCRIBE)
    max_bytes: int = 64 * _MIB  # serialised result size
    max_memory_mib: int = 2048  # resident memory of a worker while it runs a query
    allow_service: bool = False  # SPARQL SERVICE (and LOAD in updates): the server fetches URLs

    def __post_init__(self) -> None:
        for name in ("max_chars", "max_depth", "max_rows", "max_bytes", "max_memory_mib"):
            if getattr(self, name) < 1:
                raise KgError(f"query limit {name} must be >= 1, got {getattr(self, name)}")
        if not self.timeout_s > 0:
            raise KgError(f"query limit timeout_s must be > 0, got {self.timeout_s}")


DEFAULT_LIMITS = QueryLimits()


class QueryRejected(LesanetError, ValueError):
    """A query refused before it ran; ``status`` is the HTTP status an endpoint answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class QueryShape:
    """What the scan found: the deepest nesting and the outbound keywords used."""

    depth: int
    service: bool
    load: bool


# One SPARQL lexer as a single alternation; order matters: long strings before short
# ones, IRIs before comments ('#' is common inside IRIs), any other character last.
# A keyword, prefixed name or number is one token, so ``ex:SERVICE`` is not the keyword.
_TOKEN = re.compile(
    r'''(?P<string>"""(?:[^"\\]|\\.|"(?!""))*"""|\'\'\'(?:[^'\\]|\\.|'(?!''))*\'\'\''''
    r"""|"(?:[^"\\\n\r]|\\.)*"|'(?:[^'\\\n\r]|\\.)*')"""
    r"""|(?P<iri><[^<>"{}|^`\\\x00-\x20]*>)"""
    r"|(?P<comment>#[^\n\r]*)"
    r"|(?P<variable>[?$][\w\u00B7-\uFFFF]*)"
    r"|(?P<name>[\w\u00B7-\uFFFF][\w\u00B7-\uFFFF\-.:%\\]*|:[\w\u00B7-\uFFFF\-.:%\\]*)"
    r"|(?P<open>[{(\[])|(?P<close>[})\]])"
    r"|(?P<other>[\s\S])",
    re.DOTALL,
)


def scan_sparql(text: str) -> QueryShape:
    """Nesting depth and outbound keywords of ``text`` (no grammar check: the engine
    does that). Brackets inside strings and comments do not count; inside what looks
    like an IRI they count only locally, since ``?x<(((1)))>0`` is an expression to the
    engine, so a true IRI can only over-count. An unterminated quote is lexed as one
    character (the engine rejects the query)."""
    depth = deepest = 0
    service = load = False
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind == "open":
            depth += 1
            deepest = max(deepest, depth)
        elif kind == "close":
            depth = max(depth - 1, 0)
        elif kind == "iri":
            deepest = max(deepest, depth + _local_depth(match.group()))
        elif kind == "name":
            word = match.group().upper()
            service = service or word == "SERVICE"
            load = load or word == "LOAD"
    return QueryShape(deepest, service, load)


def _local_depth(fragment: str) -> int:
    depth = deepest = 0
    for char in fragment:
        if char in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]":
            depth = max(depth - 1, 0)
    return deepest


def check_sparql(
    text: str, limits: QueryLimits = DEFAULT_LIMITS, update: bool = False, option_prefix: str = "--"
) -> QueryShape:
    """Refuse ``text`` (raise :class:`QueryRejected` with the reason and the option that
    lifts the limit) when it is too long, nests too deep or fetches remote data."""
    what = "update" if update else "query"
    if not isinstance(text, str) or not text.strip():
        raise QueryRejected(f"the {what} is empty")
    if len(text) > limits.max_chars:
        raise QueryRejected(
            f"the {what} is {len(text):,} characters, over the limit of {limits.max_chars:,} ({option_prefix}max-query-chars)",
            status=413,
        )
    if "\x00" in text:
        raise QueryRejected(f"the {what} contains a NUL character")
    shape = scan_sparql(text)
    if shape.depth > limits.max_depth:
        raise QueryRejected(
            f"the {what} nests brackets {shape.depth} deep, over the limit of {limits.max_depth} ({option_prefix}max-depth)"
        )
    if not limits.allow_service:
        if shape.service:
            raise QueryRejected(
                f"SERVICE is refused: it makes this process fetch remote data ({option_prefix}allow-service to permit it)",
                status=403,
            )
        if update and shape.load:
            raise QueryRejected(
                f"LOAD is refused: it makes this process fetch remote data ({option_prefix}allow-service to permit it)",
                status=403,
            )
    return shape
