"""The toolkit's user-facing error base, and the errors of the ontology room.

Every room's errors derive from :class:`LesanetError` (ontology is the floor all rooms import):
``cli.main`` prints those, and ``OSError``, as one line with exit code 1; any other exception
is a bug and is shown as one. Room errors also keep their old builtin base (``ValueError``,
``LookupError``, ``OSError``) so code that catches those still does.
"""

from __future__ import annotations


class LesanetError(Exception):
    """A user-facing failure: bad input, a missing or malformed file, a refused request.

    The message names the file / line / record and what to do."""


class OntologyError(LesanetError, ValueError):
    """A malformed or incoherent ontology file, or a bad spreadsheet."""


class UnknownLabelError(LesanetError, LookupError):
    """A label name, synonym or IRI that the ontology does not have."""

    def __init__(self, query: str, source: str, suggestions: list[str]) -> None:
        self.query = query
        self.suggestions = suggestions
        hint = f"; did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown label {query!r} in {source}{hint}")

    def __str__(self) -> str:  # LookupError would repr() the message
        return self.args[0]
