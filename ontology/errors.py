"""Errors of the ontology room: each message names the file and the offending item."""

from __future__ import annotations


class OntologyError(ValueError):
    """A malformed or incoherent ontology file, or a bad spreadsheet."""


class UnknownLabelError(LookupError):
    """A label name, synonym or IRI that the ontology does not have."""

    def __init__(self, query: str, source: str, suggestions: list[str]) -> None:
        self.query = query
        self.suggestions = suggestions
        hint = f"; did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown label {query!r} in {source}{hint}")

    def __str__(self) -> str:  # LookupError would repr() the message
        return self.args[0]
