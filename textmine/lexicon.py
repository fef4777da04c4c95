"""The label lexicon: ontology names and synonyms plus ``data/lexicon.yaml``, and the matcher
(its matches, :class:`LexiconMatch`, become :class:`ontology.records.Mention` on output).

Matching runs over normalised pieces (see :mod:`textmine.tokens`): lower case, plurals
reduced through spaCy's lemma lookup table (spacy-lookups-data) with a small suffix rule
for the table's gaps ("masses" -> "mass", "hypodensities" -> "hypodensity"), and frequent
misspellings of long words repaired by one edit. Only plural-looking words go through the
lemma table, so comparatives ("largest") never turn into labels ("large").

Every maximal match is kept (a match inside a longer one is dropped: "right lower lobe"
beats "lobe"). A longer phrase may still contain a lesion *type* that it does not imply
("right hilar adenopathy" is the right hilar lymph node, and also adenopathy): such a
nested type is kept as its own mention.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from spacy.lookups import load_lookups

from ontology.protocol import OntologyLike
from ontology.records import Mention
from textmine.derive import derivations
from textmine.errors import TextmineError
from textmine.tokens import SKIPPED_WORDS, Piece


@dataclass(frozen=True, slots=True)
class LexiconEntry:
    label: str
    iri: str
    category: str
    # (offset, length, label, iri, category, forced relation or None) of labels inside the
    # phrase that it does not imply: a lesion type ("right hilar adenopathy" -> adenopathy),
    # or the label a negative phrase denies ("not calcified" -> calcified, irrelevant)
    nested: tuple[tuple[int, int, str, str, str, str | None], ...] = ()


@dataclass(slots=True)
class LexiconMatch:
    """The matcher's working mention: a character span and the pieces it covers, the
    label with its category, and the relation the engines assign (mutable while they
    do). What leaves the miner is :meth:`as_mention`, the exchanged
    :class:`ontology.records.Mention`."""

    start: int
    end: int
    text: str
    label: str
    iri: str
    category: str
    first_piece: int
    last_piece: int  # inclusive
    relation: str = "relevant"
    cue: str | None = None
    forced: str | None = None  # a relation fixed by the phrase itself ("not calcified": calcified is denied)

    def as_mention(self) -> Mention:
        return Mention(self.start, self.end, self.text, self.label, self.relation, self.iri, self.cue)


def load_data_yaml(name: str) -> dict[str, Any]:
    """A YAML file shipped in ``textmine/data``."""
    text = resources.files("textmine").joinpath("data", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@lru_cache(maxsize=1)
def lemma_table() -> dict[str, str]:
    """spaCy's English lemma lookup table (from the installed spacy-lookups-data package)."""
    return dict(load_lookups("en", ["lemma_lookup"]).get_table("lemma_lookup").items())


_PHRASE_SPLIT = re.compile(r"[\s\-/]+")
_LETTERS = string.ascii_lowercase


def phrase_words(phrase: str) -> list[str]:
    """Lower-cased words of a lexicon phrase (hyphens and slashes are spaces, articles dropped)."""
    words = [w for w in _PHRASE_SPLIT.split(phrase.lower().strip()) if w]
    return [w for w in words if w not in SKIPPED_WORDS]


class Normalizer:
    """Maps a lower-cased word to the form the lexicon knows; cached per word."""

    def __init__(self, vocabulary: set[str], blocked: set[str]) -> None:
        self.vocabulary = vocabulary
        self._blocked = blocked
        self._lemmas = lemma_table()
        self._english = set(self._lemmas) | set(self._lemmas.values())
        self._cache: dict[str, str] = {}

    def __call__(self, word: str) -> str:
        cached = self._cache.get(word)
        if cached is None:
            cached = self._normalize(word)
            if len(self._cache) < 500_000:
                self._cache[word] = cached
        return cached

    def _normalize(self, word: str) -> str:
        vocab = self.vocabulary
        if word in vocab or word in self._blocked or not word.isalpha():
            return word
        if word.endswith(("s", "i", "a", "ae")):  # plural-looking: never comparatives/participles
            for candidate in self._plural_candidates(word):
                if candidate in vocab:
                    return candidate
        if len(word) >= 8 and word not in self._english:
            repaired = self._one_edit(word)
            if repaired is not None:
                return repaired
        return word

    def _plural_candidates(self, word: str) -> list[str]:
        out = [self._lemmas.get(word, word)]
        if word.endswith("ies"):
            out.append(word[:-3] + "y")
        if word.endswith("ses"):
            out.append(word[:-2] + "is")
        if word.endswith("es"):
            out.append(word[:-2])
        if word.endswith("s"):
            out.append(word[:-1])
        if word.endswith("ae"):
            out.append(word[:-1])
        return out

    def _one_edit(self, word: str) -> str | None:
        """The single known word one insertion, deletion, substitution or swap away, if unique."""
        vocab = self.vocabulary
        found: set[str] = set()
        for i in range(len(word) + 1):
            left, right = word[:i], word[i:]
            if right:
                found.update({left + right[1:]} & vocab)
                if len(right) > 1:
                    found.update({left + right[1] + right[0] + right[2:]} & vocab)
            for c in _LETTERS:
                if right:
                    cand = left + c + right[1:]
                    if cand in vocab:
                        found.add(cand)
                cand = left + c + right
                if cand in vocab:
                    found.add(cand)
        found = {f for f in found if len(f) >= 7}
        return found.pop() if len(found) == 1 else None


@dataclass
class Lexicon:
    """Phrase keys (tuples of normalised words) -> ontology labels, with a longest-match matcher."""

    entries: dict[tuple[str, ...], LexiconEntry]
    normalizer: Normalizer
    laterality_words: frozenset[str] = frozenset()
    position_words: frozenset[str] = frozenset()
    lengths_by_first: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lengths: dict[str, set[int]] = {}
        for key in self.entries:
            lengths.setdefault(key[0], set()).add(len(key))
        self.lengths_by_first = {w: tuple(sorted(n, reverse=True)) for w, n in lengths.items()}

    @property
    def known_words(self) -> frozenset[str]:
        return frozenset(self.normalizer.vocabulary)

    def match(self, pieces: Sequence[Piece], text: str) -> list[LexiconMatch]:
        """All maximal label matches in ``pieces``, left to right."""
        # Articles are skipped: matching runs over the indices of the other pieces.
        index = [i for i, p in enumerate(pieces) if p.norm not in SKIPPED_WORDS]
        norms = [pieces[i].norm for i in index]
        found: list[tuple[int, int, LexiconEntry]] = []  # (first, last) in `index` positions
        gapped: set[int] = set()  # indices into `found` of side/position matches
        lengths_of, entry_of, size = self.lengths_by_first.get, self.entries.get, len(norms)
        sides, positions = self.laterality_words, self.position_words
        for pos, word in enumerate(norms):
            lengths = lengths_of(word)
            if not lengths:
                continue
            for n in lengths:
                if pos + n <= size:
                    entry = entry_of((word,) if n == 1 else tuple(norms[pos : pos + n]))
                    if entry is not None:
                        found.append((pos, pos + n - 1, entry))
                        break  # the longest match starting here
            if (word in sides or word in positions) and not (found and found[-1][0] == pos):
                lateral = self._lateral_match(norms, pos)  # a fallback when no plain match starts here
                if lateral is not None:
                    gapped.add(len(found))
                    found.append(lateral)
        # Matches come ordered by start, so a match is inside an earlier one exactly when an
        # earlier match reaches as far. A gapped (side/position) match never hides a plain
        # match inside it: "anterior superior mediastinal" is anterior and superior mediastinum.
        maximal = []
        reach = -1
        for k, f in enumerate(found):
            if f[1] > reach:
                maximal.append(f)
            if k not in gapped:
                reach = max(reach, f[1])
        mentions: list[LexiconMatch] = []
        for first, last, entry in maximal:
            mentions.append(_mention(pieces, index[first], index[last], entry.label, entry.iri, entry.category, text))
            for offset, length, label, iri, category, forced in entry.nested:
                a, b = index[first + offset], index[first + offset + length - 1]
                nested = _mention(pieces, a, b, label, iri, category, text)
                nested.forced = forced
                mentions.append(nested)
        mentions.sort(key=lambda m: (m.start, -m.end))
        return mentions

    def _lateral_match(self, norms: Sequence[str], pos: int) -> tuple[int, int, LexiconEntry] | None:
        """ "left" + position words + organ -> the lateral label ("left anterior renal" -> left kidney)."""
        side, lengths = norms[pos], self.lengths_by_first.get(norms[pos], ())
        p = pos + 2  # pos + 1 is the plain match, found already
        while p < len(norms) and norms[p - 1] in self.position_words:
            for n in lengths:
                if n >= 2 and p + n - 1 <= len(norms):
                    entry = self.entries.get((side, *norms[p : p + n - 1]))
                    if entry is not None:
                        return pos, p + n - 2, LexiconEntry(entry.label, entry.iri, entry.category)
            p += 1
        return None


def _mention(pieces: Sequence[Piece], a: int, b: int, label: str, iri: str, category: str, text: str) -> LexiconMatch:
    start, end = pieces[a].start, pieces[b].end
    return LexiconMatch(start, end, text[start:end], label, iri, category, a, b)


def _extra_entries(data: dict[str, Any]) -> tuple[list[tuple[str, str]], set[str]]:
    extra: list[tuple[str, str]] = []
    for section, mapping in data.items():
        if section == "not_labels" or not isinstance(mapping, dict):
            continue
        extra.extend((str(k), str(v)) for k, v in mapping.items())
    return extra, {str(w).lower() for w in data.get("not_labels", [])}


def _synonym_variants(phrase: str) -> list[str]:
    """Systematic variants of a synonym: "X adenopathy" is also "X lymphadenopathy"."""
    out = [phrase]
    if phrase.lower().endswith(" adenopathy"):
        out.append(phrase[: -len("adenopathy")] + "lymphadenopathy")
    return out


def known_phrases(onto: OntologyLike, data: dict[str, Any] | None = None) -> dict[str, str]:
    """Lower-cased phrase -> label: every name and synonym of the ontology, plus ``data/lexicon.yaml``."""
    extra, _ = _extra_entries(data if data is not None else load_data_yaml("lexicon.yaml"))
    by_phrase: dict[str, str] = {}
    for name, term in onto.terms.items():
        for phrase in (name, *term.synonyms):
            for variant in _synonym_variants(phrase):
                by_phrase.setdefault(variant.lower(), name)
    for name in onto.terms:  # a label's own name beats another label's synonym
        by_phrase[name.lower()] = name
    for phrase, target in extra:
        label = target if target in onto.terms else by_phrase.get(target.lower())
        if label is None:
            raise TextmineError(
                f"textmine/data/lexicon.yaml: {phrase!r} -> {target!r} is neither a label nor a synonym "
                "in the ontology; fix the entry or add the synonym to the ontology"
            )
        by_phrase[phrase.lower()] = label
    return by_phrase


def build_lexicon(onto: OntologyLike, extra_words: Iterable[str] = ()) -> Lexicon:
    """The lexicon for ``onto``: every term name and synonym, plus ``data/lexicon.yaml``.

    ``extra_words`` (e.g. cue words) join the vocabulary so that their plurals normalise too.
    """
    data = load_data_yaml("lexicon.yaml")
    _, blocked = _extra_entries(data)
    by_phrase = known_phrases(onto, data)

    derived = derivations(onto, by_phrase, blocked=[*blocked, *(w.lower() for w in extra_words)])
    vocabulary: set[str] = set()
    for phrase in by_phrase:
        vocabulary.update(phrase_words(phrase))
    for d in derived:
        vocabulary.update(phrase_words(d.phrase))
    for phrase in extra_words:
        vocabulary.update(phrase_words(phrase))
    normalizer = Normalizer(vocabulary, blocked)

    plain: dict[tuple[str, ...], str] = {}
    for phrase, label in by_phrase.items():
        key = tuple(normalizer(w) for w in phrase_words(phrase))
        if key and (key not in plain or phrase == label.lower()):
            plain[key] = label

    def entry_for(label: str) -> LexiconEntry:
        term = onto.terms[label]
        return LexiconEntry(label, term.iri, term.category)

    entries = {key: entry_for(label) for key, label in plain.items()}
    for d in derived:  # generated forms never override a name, synonym or lexicon.yaml entry
        key = tuple(normalizer(w) for w in phrase_words(d.phrase))
        if d.labels and key and key not in entries:
            entries[key] = _multi_label_entry(onto, d.labels, len(key))
    _add_nested_types(entries, onto, frozenset({"not", "no", "without"}))
    return Lexicon(
        entries,
        normalizer,
        frozenset(normalizer(str(w).lower()) for w in data.get("laterality_words", [])),
        frozenset(normalizer(str(w).lower()) for w in data.get("position_words", [])),
    )


def _multi_label_entry(onto: OntologyLike, labels: Sequence[str], length: int) -> LexiconEntry:
    """One phrase implying several labels: the first is the entry, the others span the same words."""
    first, *others = (onto.terms[label] for label in labels)
    nested = tuple((0, length, t.name, t.iri, t.category, None) for t in others)
    return LexiconEntry(first.name, first.iri, first.category, nested)


def _add_nested_types(
    entries: dict[tuple[str, ...], LexiconEntry], onto: OntologyLike, negations: frozenset[str]
) -> None:
    """Give each multi-word key the labels inside it that its label does not imply."""
    for key, entry in list(entries.items()):
        if len(key) < 2:
            continue
        implied: set[str] | None = None
        nested: list[tuple[int, int, str, str, str, str | None]] = []
        if key[0] in negations:  # "not calcified" (noncalcified) denies calcified
            denied = entries.get(key[1:])
            if denied is not None and denied.label != entry.label:
                entries[key] = LexiconEntry(
                    entry.label,
                    entry.iri,
                    entry.category,
                    ((1, len(key) - 1, denied.label, denied.iri, denied.category, "irrelevant"),),
                )
            continue
        for offset in range(len(key)):
            for length in range(len(key) - offset, 0, -1):
                if length == len(key):
                    continue
                inner = entries.get(key[offset : offset + length])
                if inner is None or inner.category != "type":
                    continue
                if implied is None:
                    implied = onto.expand([entry.label])
                if inner.label not in implied:
                    nested.append((offset, length, inner.label, inner.iri, inner.category, None))
                break
        if nested:
            entries[key] = LexiconEntry(entry.label, entry.iri, entry.category, entry.nested + tuple(nested))
