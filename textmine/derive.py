"""The derivational layer: word forms generated from the ontology by the rules in ``data/derivations.yaml``.

Every rule is applied to every term, so an ontology edit regenerates the forms:

* positional prefixes (peri-, para-, juxta-, sub-, supra-, infra-, retro-, pre-, inter-,
  extra-, intra-, endo-, epi-) on each body part's one-word names, synonyms and combining
  forms. One rule says what prefix + X implies: "within / upon" prefixes give X; "beside"
  prefixes give X when X is a sheet (pleura, fissure: the lesion lies on it), and for any
  other X what ``next_to_organ`` says (no location, or X's region). A derived word the
  ontology names itself keeps that name's term;
* adverbs and participles of attribute and type words ("heterogeneously", "enhanced",
  "stenotic"), and hyper-/hypo-/iso- forms of attribute words (finer term when named, else
  the base attribute);
* vessel phrases: an organ's adjective before a vessel word names the vessel, next to the
  organ, unless the ontology puts a vessel under that organ ("splenic artery" is not the
  spleen, "femoral artery" not the femur; "renal artery" is under the kidney);
* region names and lobe / segment / part names listed as data;
* name composites: a term named "<location> <head>" (hilum lymph node, mesentery lymph node)
  that lies under both, inferred when both are said of one lesion, as the ontology's own
  composite definitions are.

``derivations(onto, known)`` returns the generated forms; the lexicon adds those that no
name, synonym or ``lexicon.yaml`` entry already claims.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from ontology.protocol import OntologyLike
from textmine.errors import TextmineError

DERIVATIONS_FILE = "derivations.yaml"
_ATTRIBUTE_PREFIXES = ("hyper", "hypo")
_SIDES = ("left", "right")  # a sided term is reached through the side word before its location


@dataclass(frozen=True, slots=True)
class Derivation:
    """A generated surface form, the labels it implies (empty: a known word naming no label), and why."""

    phrase: str
    labels: tuple[str, ...]
    rule: str


@dataclass(frozen=True, slots=True)
class NameComposite:
    """A term named "<location> <head>" under the head: inferred when both are said of one lesion.

    ``location`` is a body-part term, or, when the name's modifier is no term of its own
    ("supraclavicular", "subcarinal"), ``modifier`` holds its lower-cased words.
    """

    term: str
    location: str | None
    head: str
    modifier: tuple[str, ...] = ()


@lru_cache(maxsize=1)
def derivation_rules() -> dict[str, Any]:
    """The rules shipped in ``textmine/data/derivations.yaml``."""
    return yaml.safe_load(resources.files("textmine").joinpath("data", DERIVATIONS_FILE).read_text(encoding="utf-8"))


class Anatomy:
    """Region, sheet and vessel facts about body-part terms, read off the ontology graph."""

    def __init__(self, onto: OntologyLike, rules: Mapping[str, Any]) -> None:
        self.onto = onto
        self.regions = [r for r in rules.get("regions", []) if r in onto.terms]
        self.sheets = {s for s in rules.get("sheets", []) if s in onto.terms}
        self._ancestors: dict[str, set[str]] = {}

    def ancestors(self, name: str) -> set[str]:
        hit = self._ancestors.get(name)
        if hit is None:
            hit = self._ancestors[name] = set(self.onto.ancestors(name))
        return hit

    def region_of(self, name: str) -> tuple[str, ...]:
        """The most specific body regions among the strict ancestors of ``name``."""
        found = [r for r in self.regions if r in self.ancestors(name)]
        return tuple(r for r in found if not any(r in self.ancestors(o) for o in found if o != r))

    def is_sheet(self, name: str) -> bool:
        return name in self.sheets or bool(self.sheets & self.ancestors(name))

    def is_vessel(self, name: str) -> bool:
        return name == "blood vessel" or "blood vessel" in self.ancestors(name)

    def holds_vessels(self, name: str) -> bool:
        """True when the ontology places some vessel under ``name`` (renal artery under kidney)."""
        return any(self.is_vessel(d) for d in self.onto.descendants(name))


def _one_word_forms(term: Any) -> list[str]:
    out = []
    for phrase in (term.name, *term.synonyms):
        word = phrase.lower().replace("-", "")
        if word.isalpha() and len(word) >= 4:
            out.append(word)
    return out


def derivations(
    onto: OntologyLike, known: Mapping[str, str], blocked: Iterable[str] = (), rules: Mapping[str, Any] | None = None
) -> list[Derivation]:
    """Generated forms for ``onto``. ``known`` (lower-cased phrase -> label) are never regenerated;
    ``blocked`` words (ConText cues, not-label words) are never produced; ``rules`` default to
    ``data/derivations.yaml``."""
    rules = derivation_rules() if rules is None else rules
    anatomy = Anatomy(onto, rules)
    never = {str(w).lower() for w in rules.get("not_derived", [])} | {w.lower() for w in blocked}
    out: dict[str, Derivation] = {}

    def add(phrase: str, labels: Iterable[str], rule: str) -> None:
        phrase = phrase.lower()
        if phrase in known or phrase in never:
            return
        labels = tuple(dict.fromkeys(labels))
        old = out.get(phrase)
        if old is not None:  # two terms give one form: the form implies both ("neither" yields to a label)
            labels = tuple(dict.fromkeys(old.labels + labels))
            rule = old.rule if old.labels else rule
        out[phrase] = Derivation(phrase, labels, rule)

    _positional(onto, anatomy, rules, add)
    _attribute_forms(onto, rules, known, add)
    _vessel_phrases(onto, anatomy, rules, add)
    for section in ("region_names", "part_names"):
        for phrase, target in (rules.get(section) or {}).items():
            targets = target if isinstance(target, list) else [target]
            missing = [t for t in targets if t not in onto.terms]
            if missing:
                raise TextmineError(
                    f"textmine/data/{DERIVATIONS_FILE}: {section} {phrase!r} -> {missing} "
                    "is not an ontology label; fix the entry"
                )
            add(str(phrase), targets, f"{section}: listed with its reason in {DERIVATIONS_FILE}")
    return sorted(out.values(), key=lambda d: d.phrase)


def _body_part_forms(onto: OntologyLike, rules: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(word, term, source) for every one-word name / synonym of a body part, and the combining forms."""
    forms: list[tuple[str, str, str]] = []
    for name, term in onto.terms.items():
        if term.category == "bodypart":
            forms.extend((w, name, "name or synonym") for w in _one_word_forms(term))
    for word, target in (rules.get("combining_forms") or {}).items():
        if target not in onto.terms:
            raise TextmineError(
                f"textmine/data/{DERIVATIONS_FILE}: combining form {word!r} -> {target!r} "
                "is not an ontology label; fix the entry"
            )
        forms.append((str(word).lower(), target, "combining form"))
    return forms


def _next_to(anatomy: Anatomy, rules: Mapping[str, Any], x: str) -> tuple[tuple[str, ...], str]:
    """What "next to organ x" implies, by the one `next_to_organ` rule, and why."""
    mode = rules.get("next_to_organ", "neither")
    if mode not in ("neither", "region"):
        raise TextmineError(
            f"textmine/data/{DERIVATIONS_FILE}: next_to_organ must be `neither` or `region`, not {mode!r}"
        )
    region = anatomy.region_of(x) if mode == "region" else ()
    if region:
        return region, f"next to {x}, not in it: the region of {x}, {', '.join(region)}"
    return (), f"next to {x}, not in it: no location label"


def _positional(onto: OntologyLike, anatomy: Anatomy, rules: Mapping[str, Any], add) -> None:
    for word, x, source in _body_part_forms(onto, rules):
        for prefix, spec in (rules.get("prefixes") or {}).items():
            if spec["implies"] not in ("itself", "beside"):
                raise TextmineError(
                    f"textmine/data/{DERIVATIONS_FILE}: prefix {prefix!r} implies must be `itself` or `beside`"
                )
            head = f"{prefix}- ({spec['means']}) + {word!r} ({source} of {x})"
            if spec["implies"] == "itself":
                add(prefix + word, (x,), f"{head}: within / upon {x}")
            elif anatomy.is_sheet(x):
                add(prefix + word, (x,), f"{head}: {x} is a sheet, a lesion beside it lies on it")
            else:
                labels, why = _next_to(anatomy, rules, x)
                add(prefix + word, labels, f"{head}: {why}")


def _swap_suffix(word: str, old: str, new: str) -> str | None:
    """``word`` with suffix ``old`` replaced by ``new``; a silent e drops before a vowel ("enhance" + "ed")."""
    if not (word.endswith(old) and len(word) - len(old) >= 3):
        return None
    stem = word[: -len(old)]
    if stem.endswith("e") and new[:1] in ("e", "i"):
        stem = stem[:-1]
    return stem + new


def _attribute_forms(onto: OntologyLike, rules: Mapping[str, Any], known: Mapping[str, str], add) -> None:
    pairs = [tuple(p) for p in rules.get("participle_suffixes", [])]
    adverbs = dict(rules.get("adverb_suffixes") or {})
    forms_of: dict[str, set[str]] = {}  # label -> its one-word forms, ontology and generated
    for name, term in onto.terms.items():
        if term.category not in ("attribute", "type"):
            continue
        base = _one_word_forms(term)
        forms_of.setdefault(name, set()).update(base)
        for word in base:
            for a, b in pairs:
                for old, new in ((a, b), (b, a)):
                    derived = _swap_suffix(word, old, new)
                    if derived:
                        forms_of[name].add(derived)
                        add(derived, (name,), f"participle -{old} -> -{new} of {word!r} ({name})")
            for old, new in adverbs.items():
                derived = _swap_suffix(word, old, new)
                if derived:
                    add(derived, (name,), f"adverb -{old} -> -{new} of {word!r} ({name})")
    for phrase, label in known.items():  # lexicon.yaml forms count as forms of their label too
        if label in forms_of and phrase.isalpha():
            forms_of[label].add(phrase)
    for prefix, spec in (rules.get("density_prefixes") or {}).items():
        for label, words in forms_of.items():
            if onto.terms[label].category != "attribute":
                continue
            finer = {known[prefix + w] for w in words if prefix + w in known}
            for word in words:
                if word.startswith(("hyper", "hypo", "iso", "non")):
                    continue  # one density prefix a word
                derived = prefix + word
                if finer:
                    add(
                        derived,
                        sorted(finer),
                        f"{prefix}- ({spec['means']}) + {word!r}: the finer term the ontology names",
                    )
                elif not label.lower().startswith(_ATTRIBUTE_PREFIXES):
                    add(
                        derived,
                        (label,),
                        f"{prefix}- ({spec['means']}) + {word!r}: no finer term, the base attribute {label}",
                    )
                else:
                    add(derived, (), f"{prefix}- + {word!r}: {label} is itself a hyper-/hypo- term: no label")


def _vessel_phrases(onto: OntologyLike, anatomy: Anatomy, rules: Mapping[str, Any], add) -> None:
    vessels = {str(k).lower(): str(v) for k, v in (rules.get("vessel_words") or {}).items()}
    for label in vessels.values():
        if label not in onto.terms:
            raise TextmineError(
                f"textmine/data/{DERIVATIONS_FILE}: vessel word label {label!r} is not an ontology label"
            )
    for word, x, source in _body_part_forms(onto, rules):
        if x in anatomy.regions or anatomy.is_sheet(x) or anatomy.is_vessel(x) or anatomy.holds_vessels(x):
            continue
        labels, why = _next_to(anatomy, rules, x)
        for vessel_word, vessel in vessels.items():
            add(
                f"{word} {vessel_word}",
                (vessel, *labels),
                f"{word!r} ({source} of {x}) + {vessel_word!r}: a vessel (the ontology puts none under {x}), {why}",
            )


def name_composites(onto: OntologyLike) -> list[NameComposite]:
    """Terms named "<location> <head>" (head = lymph node or a lesion type) that lie under both.

    The ontology defines some such terms as intersections (mediastinum lymph node); for the
    others (hilum lymph node, mesentery lymph node, ...) the name says the same thing.
    """
    by_phrase: dict[str, str] = {}
    for name, term in onto.terms.items():
        for phrase in (name, *term.synonyms):
            by_phrase.setdefault(phrase.lower(), name)
    out = []
    for name, term in onto.terms.items():
        if term.composite_of:
            continue  # the ontology infers it already
        words = name.split()
        ancestors = onto.ancestors(name)
        for i in range(1, len(words)):
            modifier = " ".join(words[:i]).lower()
            location = by_phrase.get(modifier)
            head = by_phrase.get(" ".join(words[i:]).lower())
            if not head or name == head or head not in ancestors:
                continue
            if not (head == "lymph node" or onto.terms[head].category == "type"):
                continue
            if location is None:
                if i == len(words) - 1 or head == "lymph node":  # "supraclavicular lymph node"
                    if modifier.split()[0] not in _SIDES:
                        out.append(NameComposite(name, None, head, tuple(modifier.split())))
                break
            if location != name and onto.terms[location].category == "bodypart" and location in ancestors:
                out.append(NameComposite(name, location, head))
                break
    return out


class NameComposer:
    """Infers name composites from the mentions said of one lesion (see :func:`name_composites`).

    A side word right before the location mention picks the sided term when the ontology has
    one ("left hilar mass or lymphadenopathy" -> left hilum lymph node).
    """

    def __init__(self, onto: OntologyLike, side_words: Iterable[str], norm: Any = str.lower) -> None:
        self.onto = onto
        self.side_words = frozenset(side_words)
        self.rules = []  # (term, location label or None, modifier words, labels that are the head or under it)
        for c in name_composites(onto):
            modifier = tuple(norm(w) for w in c.modifier)
            self.rules.append((c.term, c.location, modifier, frozenset({c.head, *onto.descendants(c.head)})))
        self.heads = frozenset().union(*(h for *_, h in self.rules)) if self.rules else frozenset()
        self.terms = frozenset(r[0] for r in self.rules) | frozenset(
            n for n in onto.terms if any(n == f"{s} {r[0]}" for s in self.side_words for r in self.rules)
        )

    def infer(self, mentions: Sequence[Any], pieces: Sequence[Any] = ()) -> set[str]:
        labels = {m.label for m in mentions}
        if not self.rules or not labels & self.heads:
            return set()
        norms = [p.norm for p in pieces]
        words = set(norms)
        found: set[str] = set()
        for term, location, modifier, heads in self.rules:
            if term in labels or not (labels & heads):
                continue
            if location is not None:
                if location not in labels:
                    continue
                found.add(term)
                starts = [m.first_piece for m in mentions if m.label == location]
            else:
                if not words.issuperset(modifier):
                    continue
                starts = [
                    i for i in range(len(norms) - len(modifier) + 1) if tuple(norms[i : i + len(modifier)]) == modifier
                ]
                if not starts:
                    continue
                found.add(term)
            for start in starts:  # a side word right before the location picks the sided term
                side = norms[start - 1] if 0 < start <= len(norms) else None
                if side in self.side_words and f"{side} {term}" in self.onto.terms:
                    found.add(f"{side} {term}")
        return found
