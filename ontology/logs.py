"""The toolkit's log: library code reports notes and progress through ``logging``, never ``print``.

Each module logs under its own name (``get_logger(__name__)``). One handler on each room's
logger writes to the *current* standard error (so a redirected or captured stderr sees it):
a warning as ``lesanet: note: <message>``, an info record (a progress line) as the message
alone. Records also propagate, so an application's own logging configuration sees them.
"""

from __future__ import annotations

import logging
import sys

ROOMS = ("ontology", "textmine", "vision", "kg")


class _CurrentStderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time of the record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            prefix = "lesanet: note: " if record.levelno >= logging.WARNING else ""
            sys.stderr.write(f"{prefix}{message}\n")
        except Exception:  # noqa: BLE001 - logging's rule: a failing handler reports, never raises
            self.handleError(record)


def _install() -> None:
    for room in ROOMS:
        logger = logging.getLogger(room)
        if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
            logger.addHandler(_CurrentStderr())
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


def get_logger(name: str) -> logging.Logger:
    """The logger of module ``name``, with the room's stderr handler in place."""
    _install()
    return logging.getLogger(name)
