"""Conventions shared by every batch job of the toolkit: one bad record never sinks a batch.

The ontology package is the floor every room imports, so the rules live here once:

- :class:`BadRecords` collects "FILE:LINE: reason" messages, keeping the first ``keep``
  and counting the rest (a file of a million bad lines cannot fill the memory);
- :func:`decode_json_line` reads one JSON record and turns every way a line can be
  hostile (torn JSON, not UTF-8, a lone surrogate, nesting too deep, a 5,000-digit
  number) into a :class:`RecordError` with the reason;
- the exit rule of every batch command (:func:`batch_exit_code`): 0 when every record
  succeeded, 3 when some failed (reported, the rest done), 1 when none succeeded.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from typing import Any, Protocol

from ontology.errors import LesanetError

EXIT_OK = 0
EXIT_NOTHING_DONE = 1  # also the code of any one-line error
EXIT_SOME_FAILED = 3

EXIT_RULE = (
    "exit 0 when every record succeeded, 3 when some failed (each reported with file and line or row, "
    "then a summary line; the rest is written), 1 when none succeeded"
)

DEFAULT_MESSAGES = 20  # bad-record messages shown before the rest are only counted

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # the escape of a UTF-16 surrogate, \ud800-\udfff


class RecordError(LesanetError, ValueError):
    """One input record that cannot be used; the message says why, and where when the
    reader knows (``line 12: …``, ``record 3 (deeplesion/2): labels[0].score …``)."""


class ErrorSink(Protocol):
    """Where a reader or converter reports bad records, one message each: a list,
    :class:`BadRecords`, or a sink that adds the file name (``kg.backend``)."""

    def append(self, message: str, /) -> None: ...


class BadRecords(list):
    """Messages about bad records: the first ``keep`` are kept, the rest only counted."""

    def __init__(self, keep: int = DEFAULT_MESSAGES) -> None:
        super().__init__()
        self.keep = max(0, keep)
        self.total = 0

    def append(self, message: str) -> None:  # type: ignore[override]
        self.total += 1
        if len(self) < self.keep:
            super().append(message)

    def extend(self, messages: Iterable[str]) -> None:  # type: ignore[override]
        for message in messages:
            self.append(message)

    @property
    def hidden(self) -> int:
        """Messages counted but not kept."""
        return self.total - len(self)

    def lines(self, noun: str = "bad records") -> list[str]:
        """The kept messages and, when some were dropped, one line counting them."""
        more = [f"... and {self.hidden:,} more {noun} (not shown)"] if self.hidden else []
        return [*self, *more]


def batch_exit_code(succeeded: int, failed: int) -> int:
    """The documented exit rule (see ``EXIT_RULE``)."""
    if failed == 0:
        return EXIT_OK
    return EXIT_SOME_FAILED if succeeded > 0 else EXIT_NOTHING_DONE


def json_failure(exc: ValueError | RecursionError, not_json: str = "not JSON") -> str:
    """Why the ``json`` decoder refused a text, in words: torn (``not_json`` names it, with
    the column), nested too deep, a number of too many digits."""
    if isinstance(exc, json.JSONDecodeError):
        reason = exc.msg.removesuffix(" at")  # "Unterminated string starting at" + " at column N"
        return f"{not_json} ({reason} at column {exc.colno}); a torn or truncated line?"
    if isinstance(exc, RecursionError):
        return "JSON nested too deep"
    if "digits" in str(exc):  # Python refuses integers of more than sys.get_int_max_str_digits() digits
        return f"a number of more than {sys.get_int_max_str_digits():,} digits"
    return str(exc).splitlines()[0]


def check_text(value: Any, raw: str, where: str = "") -> None:
    """Refuse a decoded value that holds a lone surrogate: json accepts ``"\\ud800"`` and
    yields one, which no UTF-8 output can hold (``raw`` is the JSON text it came from)."""
    if not _SURROGATE_ESCAPE.search(raw):
        return
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        reason = f"a string holds a lone surrogate ({exc.object[exc.start]!r}), which is not text"
        raise RecordError(_at(where, reason)) from None
    except RecursionError:
        raise RecordError(_at(where, "JSON nested too deep")) from None


def decode_json_line(raw: bytes | str, where: str = "", *, not_json: str = "not JSON") -> Any:
    """One JSON value from one line; every failure is a :class:`RecordError` with the reason.

    ``where`` (e.g. ``line 12``) starts each message when given; ``not_json`` is what a
    line that does not parse is called (kg's messages say ``not valid JSON``).
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8 (byte {exc.start + 1} of the line); re-encode the file as UTF-8"
            raise RecordError(_at(where, reason)) from None
    else:
        text = raw
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RecordError(_at(where, json_failure(exc, not_json))) from None
    check_text(value, text, where)
    return value


def _at(where: str, reason: str) -> str:
    return f"{where}: {reason}" if where else reason
