"""Graph reasoning over the label hierarchy with networkx.

The hierarchy is a ``networkx.DiGraph`` with an edge ``child -> parent`` for every
``rdfs:subClassOf`` between two terms. On top of it:

* composite inference: a term defined as the intersection of its parts is a parent of
  every term that has all the parts among its ancestors (what an OWL reasoner concludes
  from ``owl:equivalentClass [owl:intersectionOf (...)]``);
* inherited exclusions, the paper's rule: if a and b are exclusive, every descendant of a
  is exclusive with every descendant of b (``owl:disjointWith`` semantics);
* unsatisfiable terms: a term below both sides of one exclusion.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet

import networkx as nx

Pair = tuple[str, str]


def ordered_pair(a: str, b: str) -> Pair:
    """An unordered pair in canonical order."""
    return (a, b) if a <= b else (b, a)


def self_and_descendants(graph: nx.DiGraph, name: str) -> set[str]:
    """``name`` and every term below it (edges point child -> parent)."""
    return nx.ancestors(graph, name) | {name}


def self_and_ancestors(graph: nx.DiGraph, name: str) -> set[str]:
    """``name`` and every term above it."""
    return nx.descendants(graph, name) | {name}


def infer_composite_edges(graph: nx.DiGraph, composites: Mapping[str, Sequence[str]]) -> list[Pair]:
    """Add ``term -> composite`` edges wherever a term has all parts of a composite above it.

    Returns the added (child, composite) edges. Runs to a fixpoint, because a new edge can
    give a term new ancestors and so complete another composite.
    """
    added: list[Pair] = []
    changed = True
    while changed:
        changed = False
        for composite, parts in sorted(composites.items()):
            if any(p not in graph for p in parts) or composite not in graph:
                continue
            below_all = set.intersection(*(self_and_descendants(graph, p) for p in parts))
            below_composite = self_and_descendants(graph, composite)
            for term in sorted(below_all - below_composite):
                graph.add_edge(term, composite)
                added.append((term, composite))
                changed = True
    return added


def inherited_exclusions(graph: nx.DiGraph, stated: Iterable[Pair]) -> dict[str, set[str]]:
    """Every term's exclusive terms after inheritance (symmetric; may contain the term itself
    when it is unsatisfiable)."""
    exclusive: dict[str, set[str]] = {name: set() for name in graph.nodes}
    below: dict[str, set[str]] = {}
    for a, b in stated:
        for side in (a, b):
            if side not in below:
                below[side] = self_and_descendants(graph, side)
        for x in below[a]:
            exclusive[x] |= below[b]
        for y in below[b]:
            exclusive[y] |= below[a]
    return exclusive


def add_composite_exclusions(
    graph: nx.DiGraph, composites: Mapping[str, Sequence[str]], exclusive: dict[str, set[str]]
) -> int:
    """Exclusions that follow from composite definitions, added in place; returns how many.

    If ``X ≡ A ⊓ B`` and ``y ⊥ X`` with ``y ⊑ A``, then ``y ⊓ B ⊑ A ⊓ B = X``, which ``y`` is
    disjoint with: so ``y ⊥ B`` (and every descendant of ``B``). For example
    ``lung nodule ⊥ lung mass`` and ``lung mass ≡ lung ⊓ mass`` give ``lung nodule ⊥ mass``.
    Repeated to a fixpoint, because a new exclusion can feed another composite.
    """
    ancestors = {n: self_and_ancestors(graph, n) for n in graph}
    below = {n: self_and_descendants(graph, n) for n in graph}
    added = 0
    changed = True
    while changed:
        changed = False
        for composite, parts in sorted(composites.items()):
            if composite not in exclusive:
                continue
            for y in sorted(exclusive[composite]):
                missing = [p for p in parts if p not in ancestors[y]]
                if len(missing) != 1:
                    continue
                for x in below[y]:
                    new = below[missing[0]] - exclusive[x]
                    if new:
                        exclusive[x] |= new
                        for z in new:
                            exclusive[z].add(x)
                        added += len(new)
                        changed = True
    return added


def unsatisfiable_terms(graph: nx.DiGraph, stated: Iterable[Pair]) -> dict[str, Pair]:
    """Terms below both sides of an exclusion, each with the first exclusion that kills it."""
    found: dict[str, Pair] = {}
    for a, b in sorted(stated):
        both = self_and_descendants(graph, a) & self_and_descendants(graph, b)
        for term in sorted(both):
            found.setdefault(term, (a, b))
    return found


def refine_exclusion(graph: nx.DiGraph, a: str, b: str) -> list[Pair]:
    """Replace the exclusion ``a ⊥ b`` by the narrowest set of exclusions that keeps every
    inherited pair (x, y) whose subtrees do not overlap.

    The kept pairs P = {(x, y) : x ≤ a, y ≤ b, below(x) ∩ below(y) = ∅} are closed
    downwards, so they are exactly the inheritance closure of their maximal elements,
    which this returns. When the subtrees of a and b do not overlap this is [(a, b)].
    """
    below_a = self_and_descendants(graph, a)
    below_b = self_and_descendants(graph, b)
    below = {n: self_and_descendants(graph, n) for n in below_a | below_b}

    def kept(x: str, y: str) -> bool:
        return not (below[x] & below[y])

    maximal: list[Pair] = []
    for x in sorted(below_a):
        for y in sorted(below_b):
            if not kept(x, y):
                continue
            dominated = any(kept(px, y) for px in graph.successors(x) if px in below_a) or any(
                kept(x, py) for py in graph.successors(y) if py in below_b
            )
            if not dominated:
                maximal.append(ordered_pair(x, y))
    return sorted(set(maximal))


def reduced_pairs_within(graph: nx.DiGraph, subset: Iterable[str]) -> list[Pair]:
    """(child, parent) pairs of the ancestor relation restricted to ``subset`` (through any
    term, including terms outside the subset), after transitive reduction."""
    members = [n for n in subset if n in graph]
    member_set = set(members)
    restricted = nx.DiGraph()
    restricted.add_nodes_from(members)
    for child in members:
        for ancestor in nx.descendants(graph, child):
            if ancestor in member_set:
                restricted.add_edge(child, ancestor)
    reduced = nx.transitive_reduction(restricted)
    return sorted(reduced.edges)


def exclusive_pairs_within(exclusive: Mapping[str, AbstractSet[str]], subset: Iterable[str]) -> set[Pair]:
    """Unordered exclusive pairs with both members in ``subset``."""
    members = set(subset)
    return {ordered_pair(a, b) for a in members for b in exclusive.get(a, ()) if b in members and a != b}
