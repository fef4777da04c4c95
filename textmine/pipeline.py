"""The label miner: texts -> label mentions with their relation to the bookmarked lesion.

from ontology import load_ontology
from textmine.pipeline import LabelMiner

miner = LabelMiner(load_ontology(), engine="rules")        # or engine="model", model_path=...
for s in miner.mine(["Right lower lobe nodule OTHER_BMK and left liver mass BOOKMARK."]):
    print(s.relevant, s.uncertain, s.irrelevant)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from ontology.protocol import OntologyLike
from textmine.context import (
    IRRELEVANT,
    RELEVANT,
    UNCERTAIN,
    BookmarkError,
    RuleRelations,
    build_cue_set,
    check_bookmarks,
    load_cues,
)
from textmine.derive import NameComposer
from textmine.errors import TextmineError
from textmine.lexicon import Lexicon, LexiconMatch, build_lexicon
from textmine.records import InputRecord, MinedSentence
from textmine.tokens import Piece, PieceSplitter, tokenizer_nlp

ENGINES = ("rules", "model")


class LabelMiner:
    """Finds ontology labels in report sentences and decides their relation to ``BOOKMARK``."""

    def __init__(
        self,
        onto: OntologyLike,
        engine: str = "rules",
        model_path: str | None = None,
        batch_size: int = 512,
    ) -> None:
        if engine not in ENGINES:
            raise TextmineError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        self.onto = onto
        self.engine = engine
        self.batch_size = batch_size
        cue_data = load_cues()
        cue_words = [row[0] for row in cue_data["cues"]] + [str(w) for w in cue_data.get("list_introducers", [])]
        self.lexicon: Lexicon = build_lexicon(onto, extra_words=cue_words)
        self.rules = RuleRelations(build_cue_set(cue_data, self.lexicon.normalizer))
        self.splitter = PieceSplitter(self.lexicon.normalizer, self.lexicon.known_words)
        self.nlp = tokenizer_nlp()
        self.model = None
        if engine == "model":
            if model_path is None:
                raise TextmineError(
                    "engine 'model' needs a trained relation model: pass model_path (lesanet textmine train-relations)"
                )
            # local: the relation CNN needs torch, the rules engine does not
            from textmine.relcnn import RelationModel

            self.model = RelationModel.load(model_path)
        self._expand_cache: dict[frozenset[str], frozenset[str]] = {}
        self.composer = NameComposer(onto, self.lexicon.laterality_words, self.lexicon.normalizer)

    # ------------------------------------------------------------------ API
    def mine(self, texts: Sequence[str], expand: bool = False) -> list[MinedSentence]:
        """Mine plain texts (ids are their positions)."""
        records = [InputRecord(i + 1, i, t) for i, t in enumerate(texts)]
        return list(self.mine_records(records, expand=expand))

    def mine_records(self, records: Iterable[InputRecord], expand: bool = False) -> Iterator[MinedSentence]:
        """Mine records in order; bad records come back with ``error`` set, never raise."""
        batch: list[InputRecord] = []
        for record in records:
            batch.append(record)
            if len(batch) >= self.batch_size:
                yield from self._mine_batch(batch, expand)
                batch = []
        if batch:
            yield from self._mine_batch(batch, expand)

    def pieces_and_mentions(self, text: str) -> tuple[list[Piece], list[LexiconMatch]]:
        """Tokenise one text and find its label mentions (no relations)."""
        pieces = self.splitter.pieces(self.nlp(text), text)
        return pieces, self.lexicon.match(pieces, text)

    # ------------------------------------------------------------------ internals
    def _mine_batch(self, batch: list[InputRecord], expand: bool) -> Iterator[MinedSentence]:
        texts = [r.text for r in batch if r.error is None and r.text is not None]
        docs = iter(self.nlp.pipe(texts, batch_size=self.batch_size))
        for record in batch:
            lesion_idx = _lesion_idx(record)
            if record.error is not None or record.text is None:
                yield MinedSentence(record.id, record.text, lesion_idx=lesion_idx, line=record.line, error=record.error)
                continue
            doc = next(docs)
            try:
                yield self._mine_one(record, doc, expand, lesion_idx)
            except BookmarkError as exc:
                yield MinedSentence(record.id, record.text, lesion_idx=lesion_idx, line=record.line, error=str(exc))

    def _mine_one(self, record: InputRecord, doc, expand: bool, lesion_idx: int | None) -> MinedSentence:
        text = record.text or ""
        pieces = self.splitter.pieces(doc, text)
        if any(p.is_bookmark for p in pieces):
            check_bookmarks(pieces)
        mentions = self.lexicon.match(pieces, text)
        if self.model is not None:
            self.model.assign(pieces, mentions)
        else:
            self.rules.assign(pieces, mentions)
        for mention in mentions:
            if mention.forced is not None:
                mention.relation, mention.cue = mention.forced, mention.text
        relevant, uncertain, irrelevant = self.label_lists(mentions, expand, pieces)
        found = [m.as_mention() for m in mentions]
        return MinedSentence(record.id, text, found, relevant, uncertain, irrelevant, lesion_idx, record.line)

    def label_lists(
        self, mentions: Sequence[LexiconMatch], expand: bool, pieces: Sequence[Piece] = ()
    ) -> tuple[list[str], list[str], list[str]]:
        """Relevant, uncertain and irrelevant label names; expanded (ancestors, composites) on request.

        Expansion also infers the name composites (``textmine.derive.name_composites``) from the
        mentions of one relation set: hilum + lymphadenopathy -> hilum lymph node.
        """
        rel = {m.label for m in mentions if m.relation == RELEVANT}
        unc = {m.label for m in mentions if m.relation == UNCERTAIN} - rel
        irr = {m.label for m in mentions if m.relation == IRRELEVANT}
        if expand:
            rel_m = [m for m in mentions if m.relation == RELEVANT]
            both_m = rel_m + [m for m in mentions if m.relation == UNCERTAIN]
            rel_x = self.expand(rel | self.composer.infer(rel_m, pieces))
            unc = self.expand(rel | unc | self.composer.infer(both_m, pieces)) - rel_x
            rel = rel_x
        irr -= rel | unc
        return _ordered(rel), _ordered(unc), _ordered(irr)

    def expand(self, names: Iterable[str]) -> set[str]:
        key = frozenset(names)
        if not key:
            return set()
        hit = self._expand_cache.get(key)
        if hit is None:
            hit = frozenset(self.onto.expand(key))
            if len(self._expand_cache) < 100_000:
                self._expand_cache[key] = hit
        return set(hit)


def _ordered(names: set[str]) -> list[str]:
    return sorted(names, key=lambda n: (n.lower(), n))


def _lesion_idx(record: InputRecord) -> int | None:
    value = record.extra.get("lesion_idx") if record.extra else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
