"""The knowledge graph's user-facing error (a bad file, format, query or limit); see ontology.errors."""

from __future__ import annotations

from ontology.errors import LesanetError


class KgError(LesanetError, ValueError):
    """A kg input, RDF format, SPARQL query or setting that cannot be used; the message says which."""
