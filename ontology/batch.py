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
import sys
from collections.abc import Iterable
from typing import Any

from ontology.errors import LesanetError

EXIT_OK = 0
EXIT_NOTHING_DONE = 1  # also the code of any one-line error
EXIT_SOME_FAILED = 3

EXIT_RULE = (
    "exit 0 when every record succeeded, 3 when some failed (each reported with file and line or row, "
    "then a summary line; the rest is written), 1 when none succeeded"
)

DEFAULT_MESSAGES = 20  # bad-record messages shown before the rest are only counted


class RecordError(LesanetError, ValueError):
    """One input record that cannot be used; the message says why (the caller adds where)."""


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


def decode_json_line(raw: bytes | str) -> Any:
    """One JSON value from one line; every failure is a :class:`RecordError` with the reason."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError(f"not UTF-8 (byte {exc.start + 1} of the line); re-encode the file as UTF-8") from None
    else:
        text = raw
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"not JSON ({exc.msg} at column {exc.colno}); a torn or truncated line?") from None
    except RecursionError:
        raise RecordError("JSON nested too deep to read") from None
    except ValueError as exc:  # Python refuses integers of more than sys.get_int_max_str_digits() digits
        if "digits" in str(exc):
            raise RecordError(f"a number of more than {sys.get_int_max_str_digits():,} digits") from None
        raise RecordError(str(exc).splitlines()[0]) from None
    if "\\u" in text:  # json accepts "\ud800" and yields a lone surrogate, which no UTF-8 output can hold
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RecordError(
                f"a string holds a lone surrogate ({exc.object[exc.start]!r}), which is not text"
            ) from None
        except RecursionError:
            raise RecordError("JSON nested too deep to read") from None
    return value
