"""What an edit did: the difference between two ontology files, and its downstream effect.

Terms are matched by IRI. An IRI that disappears while a new IRI appears with the same
label is a rename (Protégé's "change entity IRI"); the same IRI with another label is a
relabel. For each matched term: synonyms, category, parents, stated exclusions,
composite definition and LesaNet index. Downstream, on a label/split JSON (the official
format): which of its labels change meaning (implied labels, exclusive labels, synonyms,
or gone), and how many training lesions get other expanded targets or other exclusive
(RHEM) pairs; and whether a patch cache or run directory, which record the ontology
version they were built with, is stale.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ontology.errors import OntologyError
from ontology.model import Ontology


@dataclass
class TermChange:
    name: str  # the name in NEW
    changes: list[str] = field(default_factory=list)


@dataclass
class OntologyDiff:
    old_version: str
    new_version: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str, str]] = field(default_factory=list)  # (label, old IRI, new IRI)
    relabelled: list[tuple[str, str]] = field(default_factory=list)  # (old label, new label)
    changed: list[TermChange] = field(default_factory=list)
    downstream: dict | None = None
    staleness: list[dict] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.renamed or self.relabelled or self.changed)

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"old: {self.old_version}", f"new: {self.new_version}"]
        if self.empty:
            out.append("no term changes")
        out += [f"added: {n}" for n in self.added]
        out += [f"removed: {n}" for n in self.removed]
        out += [f"renamed: {label!r} {old} -> {new}" for label, old, new in self.renamed]
        out += [f"relabelled: {old!r} -> {new!r}" for old, new in self.relabelled]
        for change in self.changed:
            out += [f"changed: {change.name}: {c}" for c in change.changes]
        if self.downstream is not None:
            d = self.downstream
            out.append(
                f"labels ({d['labels_file']}): {len(d['labels_changing_meaning'])} of {d['n_labels']} change meaning"
            )
            out += [f"  {name}: {'; '.join(why)}" for name, why in d["labels_changing_meaning"].items()]
            out.append(
                f"training lesions: {d['train_lesions_targets_changed']} of {d['n_train_lesions']} get other "
                f"expanded targets, {d['train_lesions_exclusive_changed']} other exclusive pairs"
            )
        for item in self.staleness:
            out.append(f"{item['kind']} {item['path']}: {item['verdict']}")
        return out


def _set_change(what: str, old: Iterable[str], new: Iterable[str]) -> list[str]:
    old_set, new_set = set(old), set(new)
    out = []
    if new_set - old_set:
        out.append(f"{what} added: {', '.join(sorted(new_set - old_set))}")
    if old_set - new_set:
        out.append(f"{what} removed: {', '.join(sorted(old_set - new_set))}")
    return out


def diff_ontologies(old: Ontology, new: Ontology) -> OntologyDiff:
    """Term-level differences, matched by IRI (renames by label)."""
    result = OntologyDiff(old.version, new.version)
    old_by_iri = {t.iri: t for t in old.terms.values()}
    new_by_iri = {t.iri: t for t in new.terms.values()}
    gone = {iri for iri in old_by_iri if iri not in new_by_iri}
    fresh = {iri for iri in new_by_iri if iri not in old_by_iri}
    fresh_by_label = {new_by_iri[i].name.lower(): i for i in fresh}
    match = {iri: iri for iri in old_by_iri if iri in new_by_iri}
    for iri in sorted(gone):
        target = fresh_by_label.get(old_by_iri[iri].name.lower())
        if target is not None:
            match[iri] = target
            result.renamed.append((old_by_iri[iri].name, iri, target))
            fresh.discard(target)
        else:
            result.removed.append(old_by_iri[iri].name)
    result.added = sorted(new_by_iri[i].name for i in fresh)
    to_new = {old_by_iri[o].name: new_by_iri[n].name for o, n in match.items()}

    def in_new(names: Iterable[str]) -> set[str]:
        return {to_new.get(n, f"{n} (removed)") for n in names}

    for old_iri, new_iri in sorted(match.items(), key=lambda kv: new_by_iri[kv[1]].name):
        a, b = old_by_iri[old_iri], new_by_iri[new_iri]
        if a.name != b.name:
            result.relabelled.append((a.name, b.name))
        changes: list[str] = []
        changes += _set_change("synonyms", a.synonyms, b.synonyms)
        if a.category != b.category:
            changes.append(f"category {a.category} -> {b.category}")
        changes += _set_change("parents", in_new(old.asserted.successors(a.name)), new.asserted.successors(b.name))
        old_excl = {y if x == a.name else x for x, y in old.stated_exclusions if a.name in (x, y)}
        new_excl = {y if x == b.name else x for x, y in new.stated_exclusions if b.name in (x, y)}
        changes += _set_change("stated exclusions", in_new(old_excl), new_excl)
        if in_new(a.composite_of) != set(b.composite_of):
            changes.append(
                f"composite {' ⊓ '.join(a.composite_of) or 'none'} -> {' ⊓ '.join(b.composite_of) or 'none'}"
            )
        if a.lesanet_index != b.lesanet_index:
            changes.append(f"LesaNet index {a.lesanet_index} -> {b.lesanet_index}")
        if a.count != b.count:
            changes.append(f"DeepLesion occurrences {a.count} -> {b.count}")
        if changes:
            result.changed.append(TermChange(b.name, changes))
    return result


# --------------------------------------------------------------------------- downstream


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OntologyError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as exc:
        raise OntologyError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise OntologyError(f"{path}: expected a JSON object ({what})")
    return data


def _resolve(onto: Ontology, name: str) -> str | None:
    try:
        return onto.term(name).name
    except LookupError:
        return None


def label_effect(old: Ontology, new: Ontology, labels_json: str | Path) -> dict:
    """Effect of OLD -> NEW on a label/split JSON: labels changing meaning, training lesions
    whose expanded targets or exclusive pairs change (positives = relevant + uncertain, the
    default of training)."""
    path = Path(labels_json)
    data = _read_json(path, "label/split JSON")
    try:
        term_list = [str(n) for n in data["term_list"]]
        train = [list(r) + list(u) for r, u in zip(data["train_relevant_labels"], data["train_uncertain_labels"])]
    except (KeyError, TypeError) as exc:
        raise OntologyError(f"{path}: expected term_list and train_relevant/uncertain_labels ({exc})") from None
    in_old = {n: _resolve(old, n) for n in term_list}
    in_new = {n: _resolve(new, n) for n in term_list}
    unknown_old = [n for n, v in in_old.items() if v is None]
    if unknown_old:
        raise OntologyError(
            f"{path}: labels {', '.join(unknown_old[:5])} are not in the OLD ontology; give the one it was made with"
        )
    members = set(term_list)

    def restricted(onto: Ontology, names: Iterable[str | None]) -> set[str]:
        return {n for n in names if n in members}

    meaning: dict[str, list[str]] = {}
    for name in term_list:
        why: list[str] = []
        a, b = in_old[name], in_new[name]
        assert a is not None  # unknown OLD labels were refused above
        if b is None:
            meaning[name] = ["not a term of NEW"]
            continue
        if b != name:
            why.append(f"now a synonym of {b!r}")
        for what, old_set, new_set in (
            ("implied labels", old.ancestors(a), new.ancestors(b)),
            ("finer labels", old.descendants(a), new.descendants(b)),
            ("exclusive labels", old.exclusive(a), new.exclusive(b)),
        ):
            why += _set_change(what, restricted(old, old_set), restricted(new, new_set))
        why += _set_change("synonyms", old.terms[a].synonyms, new.terms[b].synonyms)
        if why:
            meaning[name] = why

    def targets(
        onto: Ontology, resolved: dict[str, str | None], ids: list[int], cache: dict
    ) -> tuple[frozenset, frozenset]:
        names = frozenset(n for n in (resolved[term_list[i]] for i in ids) if n is not None)
        if names not in cache:
            expanded = frozenset(restricted(onto, onto.expand(names)))
            exclusive = frozenset((p, x) for p in expanded for x in onto.exclusive(p) if x in members)
            cache[names] = (expanded, exclusive)
        return cache[names]

    old_cache: dict = {}
    new_cache: dict = {}
    changed_targets = changed_exclusive = 0
    for ids in train:
        try:
            ids = [int(i) for i in ids]
        except (TypeError, ValueError):
            raise OntologyError(f"{path}: a training lesion's label ids are not integers") from None
        if any(not 0 <= i < len(term_list) for i in ids):
            raise OntologyError(f"{path}: a training lesion has a label id outside term_list (0..{len(term_list) - 1})")
        old_t, old_x = targets(old, in_old, ids, old_cache)
        new_t, new_x = targets(new, in_new, ids, new_cache)
        changed_targets += old_t != new_t
        changed_exclusive += old_x != new_x
    return {
        "labels_file": str(path),
        "n_labels": len(term_list),
        "labels_changing_meaning": meaning,
        "n_train_lesions": len(train),
        "train_lesions_targets_changed": changed_targets,
        "train_lesions_exclusive_changed": changed_exclusive,
    }


def staleness(kind: str, directory: str | Path, old: Ontology, new: Ontology) -> dict:
    """Whether a patch cache (``index.json``) or run directory (``run.json``) was built with NEW."""
    folder = Path(directory)
    name = {"cache": "index.json", "run": "run.json"}[kind]
    recorded = _read_json(folder / name, f"{kind} {name}").get("ontology_version")
    if recorded is None:
        raise OntologyError(f"{folder / name}: records no ontology_version")
    if recorded == new.version:
        verdict = f"current (built with NEW {new.version})"
    elif recorded == old.version:
        verdict = f"stale: built with OLD {old.version}; NEW is {new.version}"
    else:
        verdict = f"stale: built with {recorded}, neither OLD nor NEW; NEW is {new.version}"
    return {
        "kind": kind,
        "path": str(folder),
        "recorded": recorded,
        "stale": recorded != new.version,
        "verdict": verdict,
    }
