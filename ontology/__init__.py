"""The OWL lesion ontology (derived from RadLex via the LesaNet spreadsheet) and its reasoning.

>>> from ontology import load_ontology
>>> onto = load_ontology()
>>> sorted(onto.expand(["kidney", "cyst"]))[:3]
['abdomen', 'cyst', 'kidney']
"""

from ontology.errors import OntologyError, UnknownLabelError
from ontology.model import SHIPPED_OWL, CheckReport, Ontology, Term, load_ontology
from ontology.vocab import LESION, LESION_ROOT, iri_for_name

__all__ = [
    "LESION",
    "LESION_ROOT",
    "SHIPPED_OWL",
    "CheckReport",
    "Ontology",
    "OntologyError",
    "Term",
    "UnknownLabelError",
    "iri_for_name",
    "load_ontology",
]
