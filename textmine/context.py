"""Rules engine: which bookmark a mention belongs to, and ConText negation/hedging/history.

Bookmark attribution (clause and coordination structure):

* The text is cut into clauses at ";" and ".". A clause without a bookmark token continues
  the nearest clause before it that has one (or the first one after it).
* In a clause, runs of bookmarks with only punctuation, "and" or "or" between them form a *group*
  ("lesions BOOKMARK, OTHER_BMK" share everything). Each group owns the words between
  the previous group and itself. Words after the last group belong to it when it is the
  only group, and to every group otherwise.
* A shared head: words before a list introducer ("for example", ":", "including", ...) in
  the first segment describe every group. Without an introducer, a later group whose own
  words name no lesion type inherits the types and attributes of the first segment
  (coordination ellipsis: "nodules in the RLL OTHER_BMK and RML BOOKMARK").

A mention is about the lesion of interest when its owners include ``BOOKMARK``; a text
without any bookmark token describes the lesion of interest as a whole.

ConText (Harkema et al. 2009) with the cue lists in ``data/context_cues.yaml`` then marks
negated / historical mentions irrelevant and hedged ones uncertain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ontology.errors import LesanetError
from textmine.errors import TextmineError
from textmine.lexicon import LexiconMatch, load_data_yaml, phrase_words
from textmine.tokens import BOOKMARK, CLAUSE_BREAKS, OTHER_BMK, SKIPPED_WORDS, Piece

RELEVANT, UNCERTAIN, IRRELEVANT = "relevant", "uncertain", "irrelevant"
RELATIONS = (RELEVANT, UNCERTAIN, IRRELEVANT)
_COORDINATORS = frozenset({"and", "while", "whereas"})
_LIST_JOINERS = frozenset({"and", "or"})
# A preposition repeated after an alternative joins the same two things: "from X or from Y".
_REPEATED_PREPOSITIONS = frozenset({"from", "in", "within", "of", "at", "into"})
_CATEGORY_RANK = {"negated": 4, "historical": 3, "landmark": 2, "uncertain": 1}


class BookmarkError(LesanetError, ValueError):
    """The text's bookmark tokens do not single out one lesion of interest."""


@dataclass(frozen=True, slots=True)
class Cue:
    phrase: str
    category: str  # negated | uncertain | historical | landmark | pseudo | terminate
    direction: str  # forward | backward | bidirectional


@dataclass(frozen=True, slots=True)
class CueHit:
    first: int  # piece index
    last: int
    cue: Cue


@dataclass
class CueSet:
    """Cue phrases keyed by normalised word tuples, plus alternatives and list introducers."""

    cues: dict[tuple[str, ...], Cue]
    alternatives: frozenset[str]
    introducers: dict[tuple[str, ...], str]

    @property
    def words(self) -> list[str]:
        return [c.phrase for c in self.cues.values()] + list(self.introducers.values())


def load_cues(path_text: str | None = None) -> dict[str, Any]:
    """The raw cue data: ``data/context_cues.yaml`` (or YAML text given by the caller)."""
    return yaml.safe_load(path_text) if path_text is not None else load_data_yaml("context_cues.yaml")


def build_cue_set(data: dict[str, Any], norm: Callable[[str], str]) -> CueSet:
    cues: dict[tuple[str, ...], Cue] = {}
    for i, row in enumerate(data["cues"]):
        if not (isinstance(row, list) and len(row) == 3):
            raise TextmineError(f"context_cues.yaml: cue {i + 1} must be [phrase, category, direction], got {row!r}")
        if not all(isinstance(x, str) for x in row):
            raise TextmineError(f"context_cues.yaml: cue {i + 1} {row!r}: quote every field (YAML reads `no` as false)")
        phrase, category, direction = row
        if category not in {"negated", "uncertain", "historical", "landmark", "pseudo", "terminate"}:
            raise TextmineError(f"context_cues.yaml: cue {phrase!r} has unknown category {category!r}")
        if direction not in {"forward", "backward", "bidirectional"}:
            raise TextmineError(f"context_cues.yaml: cue {phrase!r} has unknown direction {direction!r}")
        cues[_key(phrase, norm)] = Cue(phrase, category, direction)
    introducers = {_key(str(p), norm): str(p) for p in data.get("list_introducers", [])}
    alternatives = frozenset(str(a).lower() for a in data.get("alternatives", []))
    return CueSet(cues, alternatives, introducers)


def _key(phrase: str, norm: Callable[[str], str]) -> tuple[str, ...]:
    words = phrase_words(phrase) if any(ch.isalpha() for ch in phrase) else [phrase.lower()]
    return tuple(norm(w) if w.isalpha() else w for w in words)


class PhraseTable:
    """Phrases keyed by normalised word tuples, found longest-first and without overlap."""

    def __init__(self, table: dict[tuple[str, ...], Any]) -> None:
        self.table = table
        lengths: dict[str, set[int]] = {}
        for key in table:
            lengths.setdefault(key[0], set()).add(len(key))
        self.lengths_by_first = {w: tuple(sorted(n, reverse=True)) for w, n in lengths.items()}

    def find(self, pieces: Sequence[Piece]) -> list[tuple[int, int, Any]]:
        firsts = self.lengths_by_first
        if not any(p.norm in firsts for p in pieces):
            return []
        index = [i for i, p in enumerate(pieces) if p.norm not in SKIPPED_WORDS]
        norms = [pieces[i].norm for i in index]
        hits: list[tuple[int, int, Any]] = []
        pos = 0
        while pos < len(norms):
            step = 1
            for n in firsts.get(norms[pos], ()):
                if pos + n <= len(norms):
                    value = self.table.get(tuple(norms[pos : pos + n]))
                    if value is not None:
                        hits.append((index[pos], index[pos + n - 1], value))
                        step = n
                        break
            pos += step
        return hits


class RuleRelations:
    """Assigns relevant / uncertain / irrelevant to mentions with the rules above."""

    def __init__(self, cue_set: CueSet) -> None:
        self.cue_set = cue_set
        self._cues = PhraseTable(cue_set.cues)
        self._introducers = PhraseTable(cue_set.introducers)

    # ------------------------------------------------------------------ public
    def assign(self, pieces: Sequence[Piece], mentions: list[LexiconMatch]) -> None:
        """Set ``relation`` and ``cue`` of every mention in place."""
        owners = bookmark_owners(pieces, mentions, self._introducer_positions)
        for mention, owner in zip(mentions, owners):
            if owner and BOOKMARK not in owner:
                mention.relation, mention.cue = IRRELEVANT, OTHER_BMK
            else:
                mention.relation, mention.cue = RELEVANT, None
        self._apply_context(pieces, mentions)
        self._apply_alternatives(pieces, mentions)

    # ------------------------------------------------------------------ ConText
    def cue_hits(self, pieces: Sequence[Piece], mentions: Sequence[LexiconMatch]) -> list[CueHit]:
        covered: set[int] = set()
        for m in mentions:
            covered.update(range(m.first_piece, m.last_piece + 1))
        hits = []
        for first, last, cue in self._cues.find(pieces):
            if cue.category == "pseudo" or covered.intersection(range(first, last + 1)):
                continue  # a cue word inside a label ("not calcified") is part of the label
            hits.append(CueHit(first, last, cue))
        return hits

    def _apply_context(self, pieces: Sequence[Piece], mentions: list[LexiconMatch]) -> None:
        if not mentions:
            return
        hits = self.cue_hits(pieces, mentions)
        if not hits:
            return
        stops = {h.first for h in hits if h.cue.category == "terminate"}
        best: dict[int, tuple[int, str]] = {}
        for hit in hits:
            if hit.cue.category == "terminate":
                continue
            scope: list[LexiconMatch] = []
            landmark = hit.cue.category == "landmark"
            if hit.cue.direction in ("forward", "bidirectional"):
                scope += self._scope(pieces, mentions, stops, hit.last + 1, +1, landmark)
            if hit.cue.direction in ("backward", "bidirectional"):
                scope += self._scope(pieces, mentions, stops, hit.first - 1, -1, landmark)
            if landmark:  # a landmark is a body part; a finding next to it is still the lesion's
                scope = [m for m in scope if m.category == "bodypart"]
            if hit.cue.category == "historical" and scope and scope[0].category == "attribute":
                scope = _leading_attributes(scope)  # "previously solid nodule": the nodule is current
            rank = _CATEGORY_RANK[hit.cue.category]
            for m in scope:
                if m.relation == IRRELEVANT and m.cue == OTHER_BMK:
                    continue
                if rank > best.get(id(m), (0, ""))[0]:
                    best[id(m)] = (rank, hit.cue.phrase)
        for m in mentions:
            if id(m) in best:
                rank, phrase = best[id(m)]
                m.relation = UNCERTAIN if rank == 1 else IRRELEVANT
                m.cue = phrase
                for other in mentions:  # a label inside the mention shares its fate
                    if other is not m and m.first_piece <= other.first_piece and other.last_piece <= m.last_piece:
                        if id(other) not in best:
                            other.relation, other.cue = m.relation, phrase

    @staticmethod
    def _scope(
        pieces: Sequence[Piece],
        mentions: Sequence[LexiconMatch],
        stops: set[int],
        i: int,
        step: int,
        stop_at_comma: bool = False,
    ) -> list[LexiconMatch]:
        """Mentions reached from piece ``i`` walking by ``step`` until a scope boundary."""
        at: dict[int, list[LexiconMatch]] = {}
        for m in mentions:
            at.setdefault(m.first_piece if step > 0 else m.last_piece, []).append(m)
        found: list[LexiconMatch] = []
        while 0 <= i < len(pieces):
            piece = pieces[i]
            if piece.norm in CLAUSE_BREAKS or piece.norm == ":" or i in stops:
                break
            if piece.is_bookmark and step > 0:
                break
            if piece.norm == "," and (stop_at_comma or step < 0):
                break
            if piece.norm == "," and found:
                j = _skip_articles(pieces, i + step, step)
                following = at.get(j, []) if j is not None else []
                if not following or following[0].category != found[-1].category:
                    break
            found.extend(at.get(i, ()))
            i += step
        return found

    # ------------------------------------------------------------------ alternatives
    def _apply_alternatives(self, pieces: Sequence[Piece], mentions: list[LexiconMatch]) -> None:
        """ "A or B", "A versus B", "A/B": both alternatives are uncertain."""
        alternatives = self.cue_set.alternatives
        if len(mentions) < 2 or not any(p.norm in alternatives for p in pieces):
            return
        ends = {m.last_piece: m for m in mentions}
        starts = {m.first_piece: m for m in mentions}
        for i, piece in enumerate(pieces):
            if piece.norm not in self.cue_set.alternatives:
                continue
            after = _skip_articles(pieces, i + 1, +1)
            if after is not None and pieces[after].is_number:
                continue  # "versus 1.9 cm previously" compares measurements
            while after is not None and pieces[after].norm in _REPEATED_PREPOSITIONS:
                after = _skip_articles(pieces, after + 1, +1)  # "arising from X or from Y"
            before = _skip_articles(pieces, i - 1, -1, skip_bookmarks=True)
            left = ends.get(before) if before is not None else None
            right = starts.get(after) if after is not None else None
            if left is None or right is None:
                continue
            for m in (left, right):
                if m.relation == RELEVANT:
                    m.relation, m.cue = UNCERTAIN, piece.text

    def _introducer_positions(self, pieces: Sequence[Piece]) -> list[int]:
        return [last for _, last, _ in self._introducers.find(pieces)]


def _leading_attributes(scope: Sequence[LexiconMatch]) -> list[LexiconMatch]:
    out = []
    for m in scope:
        if m.category != "attribute":
            break
        out.append(m)
    return out


def _skip_articles(pieces: Sequence[Piece], i: int, step: int, skip_bookmarks: bool = False) -> int | None:
    while 0 <= i < len(pieces) and (pieces[i].norm in SKIPPED_WORDS or (skip_bookmarks and pieces[i].is_bookmark)):
        i += step
    return i if 0 <= i < len(pieces) else None


# ---------------------------------------------------------------------- bookmark owners


def check_bookmarks(pieces: Sequence[Piece]) -> None:
    """Raise :class:`BookmarkError` unless there is at most one BOOKMARK and it exists with OTHER_BMK."""
    n_bookmark = sum(1 for p in pieces if p.text == BOOKMARK)
    n_other = sum(1 for p in pieces if p.text == OTHER_BMK)
    if n_bookmark > 1:
        raise BookmarkError(f"{n_bookmark} {BOOKMARK} tokens; mark only the lesion of interest as {BOOKMARK}")
    if n_other and not n_bookmark:
        raise BookmarkError(f"{OTHER_BMK} without {BOOKMARK}: mark the lesion of interest as {BOOKMARK}")


def bookmark_owners(
    pieces: Sequence[Piece],
    mentions: Sequence[LexiconMatch],
    find_introducers: Callable[[Sequence[Piece]], Sequence[int]] = lambda pieces: (),
) -> list[frozenset[str]]:
    """For each mention, the bookmark kinds it describes (empty when the text has no bookmark)."""
    if not any(p.is_bookmark for p in pieces):
        return [frozenset() for _ in mentions]
    introducer_ends = find_introducers(pieces)
    clauses = _clauses(pieces)
    owner_of_piece: dict[int, frozenset[str]] = {}
    clause_tail: list[frozenset[str] | None] = []
    clause_head: list[frozenset[str] | None] = []
    for lo, hi in clauses:
        head, tail = _assign_clause(pieces, mentions, lo, hi, introducer_ends, owner_of_piece)
        clause_head.append(head)
        clause_tail.append(tail)
    # clauses without a bookmark continue the previous one (or lead into the next)
    for ci, (lo, hi) in enumerate(clauses):
        if clause_tail[ci] is not None:
            continue
        before = [t for t in clause_tail[:ci] if t is not None]
        after = [h for h in clause_head[ci + 1 :] if h is not None]
        inherited = before[-1] if before else (after[0] if after else frozenset())
        for i in range(lo, hi):
            owner_of_piece[i] = inherited
    return [owner_of_piece.get(m.first_piece, frozenset()) for m in mentions]


def _clauses(pieces: Sequence[Piece]) -> list[tuple[int, int]]:
    out, lo = [], 0
    for i, p in enumerate(pieces):
        if p.norm in CLAUSE_BREAKS:
            out.append((lo, i + 1))
            lo = i + 1
    if lo < len(pieces):
        out.append((lo, len(pieces)))
    return out


def _assign_clause(
    pieces: Sequence[Piece],
    mentions: Sequence[LexiconMatch],
    lo: int,
    hi: int,
    introducer_ends: Sequence[int],
    owner_of_piece: dict[int, frozenset[str]],
) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """Fill ``owner_of_piece`` for one clause; return the owners of its first and last segment."""
    marks = [i for i in range(lo, hi) if pieces[i].is_bookmark]
    if not marks:
        return None, None
    in_clause = [m for m in mentions if lo <= m.first_piece < hi]
    # groups: consecutive bookmarks with only punctuation or "and"/"or" between them
    groups: list[list[int]] = [[marks[0]]]
    for a, b in zip(marks, marks[1:]):
        if any(pieces[i].norm.isalnum() and pieces[i].norm not in _LIST_JOINERS for i in range(a + 1, b)):
            groups.append([b])
        else:
            groups[-1].append(b)
    kinds = [frozenset(pieces[i].text for i in g) for g in groups]
    everyone = frozenset().union(*kinds)
    bounds = [lo] + [g[-1] + 1 for g in groups]  # segment k = [bounds[k], first mark of group k)
    for k, g in enumerate(groups):
        for i in range(bounds[k], g[-1] + 1):
            owner_of_piece[i] = kinds[k]
    for k in range(1, len(groups)):
        # "A BOOKMARK, likely X, and B OTHER_BMK": the words after the comma and before the
        # coordinator still describe the previous group (an appositive)
        start, stop = bounds[k], groups[k][0]
        if pieces[start].norm == ",":
            coordinator = next((c for c in range(start + 2, stop) if pieces[c].norm in _COORDINATORS), None)
            if coordinator is not None:
                for i in range(start, coordinator):
                    owner_of_piece[i] = kinds[k - 1]
    tail_owner = kinds[0] if len(groups) == 1 else everyone
    for i in range(groups[-1][-1] + 1, hi):
        owner_of_piece[i] = tail_owner
    if len(groups) > 1:
        first_end = groups[0][0]
        intro = [e for e in introducer_ends if lo <= e < first_end]
        if intro:
            for i in range(lo, intro[-1] + 1):
                owner_of_piece[i] = everyone
        else:
            _share_elided_head(in_clause, groups, bounds, kinds, owner_of_piece)
    return owner_of_piece.get(lo, kinds[0]), tail_owner


def _share_elided_head(
    in_clause: Sequence[LexiconMatch],
    groups: list[list[int]],
    bounds: list[int],
    kinds: list[frozenset[str]],
    owner_of_piece: dict[int, frozenset[str]],
) -> None:
    first = [m for m in in_clause if m.first_piece < groups[0][0]]
    if not any(m.category == "type" for m in first):
        return
    sharers = set(kinds[0])
    for k in range(1, len(groups)):
        own = [m for m in in_clause if bounds[k] <= m.first_piece < groups[k][0]]
        if not any(m.category == "type" for m in own):
            sharers |= kinds[k]
    if sharers == set(kinds[0]):
        return
    for m in first:
        if m.category in ("type", "attribute"):
            for i in range(m.first_piece, m.last_piece + 1):
                owner_of_piece[i] = frozenset(sharers)
