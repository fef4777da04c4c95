"""The OWL lesion ontology (derived from RadLex via the LesaNet spreadsheet) and its reasoning.

>>> from ontology import load_ontology
>>> onto = load_ontology()
>>> sorted(onto.expand(["kidney", "cyst"]))[:3]
['abdomen', 'cyst', 'kidney']

``ontology`` is the floor every room imports. Its public names are imported on first use
(PEP 562), so the light floor modules (``ontology.errors``, ``ontology.protocol``,
``ontology.batch``) cost no rdflib / networkx import: ``lesanet --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ontology.errors import LesanetError, OntologyError, UnknownLabelError
    from ontology.model import SHIPPED_OWL, CheckReport, Ontology, Term, load_ontology
    from ontology.protocol import OntologyLike
    from ontology.vocab import LESION, LESION_ROOT, iri_for_name

# public name -> the module that defines it
_HOMES = {
    "LesanetError": "ontology.errors",
    "OntologyError": "ontology.errors",
    "UnknownLabelError": "ontology.errors",
    "SHIPPED_OWL": "ontology.model",
    "CheckReport": "ontology.model",
    "Ontology": "ontology.model",
    "Term": "ontology.model",
    "load_ontology": "ontology.model",
    "OntologyLike": "ontology.protocol",
    "LESION": "ontology.vocab",
    "LESION_ROOT": "ontology.vocab",
    "iri_for_name": "ontology.vocab",
}

__all__ = [
    "LESION",
    "LESION_ROOT",
    "SHIPPED_OWL",
    "CheckReport",
    "LesanetError",
    "Ontology",
    "OntologyError",
    "OntologyLike",
    "Term",
    "UnknownLabelError",
    "iri_for_name",
    "load_ontology",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ontology' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
