"""What the other rooms need of an ontology: one protocol, met by :class:`ontology.Ontology`.

textmine, vision and kg type their ``onto`` parameters with it, so a test can hand in a small
stand-in and the contract between the rooms is code (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np


class TermLike(Protocol):
    """A term as the rooms read it (``ontology.Term`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def iri(self) -> str: ...

    @property
    def category(self) -> str: ...

    @property
    def synonyms(self) -> tuple[str, ...]: ...


class OntologyLike(Protocol):
    """The part of ``ontology.Ontology`` that textmine, vision and kg use."""

    @property
    def version(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def terms(self) -> Mapping[str, Any]: ...

    def term(self, name_or_iri: str, /) -> TermLike: ...

    def iri(self, name: str, /) -> str: ...

    def category(self, name: str, /) -> str: ...

    def parents(self, name: str, /) -> set[str]: ...

    def children(self, name: str, /) -> set[str]: ...

    def ancestors(self, name: str, /) -> set[str]: ...

    def descendants(self, name: str, /) -> set[str]: ...

    def exclusive(self, name: str, /) -> set[str]: ...

    def expand(self, names: Iterable[str], /) -> set[str]: ...

    def label_set(self, name: str = ..., /) -> list[str]: ...

    def exclusive_matrix(self, names: Sequence[str], /) -> np.ndarray: ...

    def sort_specific_first(self, names: Iterable[str], /) -> list[str]: ...

    def stats(self) -> dict[str, Any]: ...
