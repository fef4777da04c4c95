"""The text miner's user-facing error (a bad input file, model or setting); see ontology.errors."""

from __future__ import annotations

from ontology.errors import LesanetError


class TextmineError(LesanetError, ValueError):
    """A textmine input, model file or setting that cannot be used; the message says which and why."""
