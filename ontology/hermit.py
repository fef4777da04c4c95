"""Cross-check with a real OWL reasoner: HermiT, run by owlready2 (needs Java)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rdflib import Graph

from ontology.errors import OntologyError


@dataclass(frozen=True)
class HermitResult:
    consistent: bool
    unsatisfiable: frozenset[str]  # class IRIs


def hermit_unsatisfiable(rdf: Graph, source: str) -> HermitResult:
    """Classify the ontology with HermiT; return consistency and unsatisfiable class IRIs."""
    import owlready2  # local: owlready2 (and its Java) only for the HermiT cross-check

    if shutil.which(owlready2.JAVA_EXE) is None and not Path(owlready2.JAVA_EXE).exists():
        raise OntologyError(f"{source}: HermiT needs Java on PATH (or use --no-reasoner)")
    world = owlready2.World()
    with tempfile.TemporaryDirectory() as tmp:
        # owlready2 reads N-Triples reliably whatever the input format was.
        nt = Path(tmp) / "lesion.nt"
        rdf.serialize(nt, format="nt", encoding="utf-8")
        onto = world.get_ontology(nt.as_uri()).load()
        try:
            with onto:
                owlready2.sync_reasoner_hermit(world, infer_property_values=False, debug=0)
        except owlready2.OwlReadyInconsistentOntologyError:
            return HermitResult(False, frozenset())
        unsatisfiable = frozenset(
            c.iri for c in world.inconsistent_classes() if c.iri != "http://www.w3.org/2002/07/owl#Nothing"
        )
    world.close()
    return HermitResult(True, unsatisfiable)
