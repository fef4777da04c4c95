"""Tokenisation: spaCy blank English with scispacy's tokenizer rules, then "pieces".

scispacy keeps hyphenated and slashed words whole ("ground-glass", "nodule/node"); the
matcher needs their parts too, so every token is cut into pieces at hyphens, slashes and
brackets. A hyphenated word whose joined form is a known word ("non-enhancing" ->
"nonenhancing") stays one piece. Each piece keeps its character span in the input text.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import spacy
from scispacy.custom_tokenizer import combined_rule_tokenizer
from spacy.attrs import IDX, LENGTH
from spacy.language import Language

BOOKMARK = "BOOKMARK"
OTHER_BMK = "OTHER_BMK"
BOOKMARK_TOKENS = frozenset({BOOKMARK, OTHER_BMK})

# Pieces that end a clause; a bookmark never spans these.
CLAUSE_BREAKS = frozenset({";", "."})
# Articles carry no meaning for matching ("tail of the pancreas" = "tail of pancreas").
SKIPPED_WORDS = frozenset({"the", "a", "an"})

_PIECE_SPLIT = re.compile(r"([-/()\[\]])")
_NUMBER = re.compile(r"^[\d.,]+(cm|mm|m)?$")


@dataclass(slots=True)
class Piece:
    """One matchable unit of text: a word part, a punctuation mark or a bookmark token."""

    start: int
    end: int
    text: str
    norm: str  # lower-cased, lemmatised form used for matching

    @property
    def is_bookmark(self) -> bool:
        return self.text in BOOKMARK_TOKENS

    @property
    def is_number(self) -> bool:
        return bool(_NUMBER.match(self.text))


@lru_cache(maxsize=1)
def tokenizer_nlp() -> Language:
    """``spacy.blank("en")`` with scispacy's tokenizer rules (no model, nothing downloaded)."""
    nlp = spacy.blank("en")
    with warnings.catch_warnings():  # scispacy's regexes trip a FutureWarning of `re`; harmless
        warnings.simplefilter("ignore", FutureWarning)
        nlp.tokenizer = combined_rule_tokenizer(nlp)
    return nlp


class PieceSplitter:
    """Cuts spaCy tokens into normalised pieces; results are cached per token text."""

    def __init__(self, norm: Callable[[str], str], known_words: frozenset[str]) -> None:
        self._norm = norm
        self._known = known_words
        self._cache: dict[str, tuple[tuple[int, int, str, str], ...]] = {}

    def split_token(self, text: str) -> tuple[tuple[int, int, str, str], ...]:
        """Pieces of one token as (offset, end offset, text, norm), offsets within the token."""
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        if text in BOOKMARK_TOKENS:
            result: tuple[tuple[int, int, str, str], ...] = ((0, len(text), text, text),)
        else:
            joined = text.replace("-", "").lower()
            if "-" in text and "/" not in text and joined.isalpha() and joined in self._known:
                result = ((0, len(text), text, self._norm(joined)),)
            else:
                parts: list[tuple[int, int, str, str]] = []
                offset = 0
                for part in _PIECE_SPLIT.split(text):
                    if part and part != "-":
                        parts.append((offset, offset + len(part), part, self._norm(part.lower())))
                    offset += len(part)
                result = tuple(parts)
        if len(self._cache) < 200_000:
            self._cache[text] = result
        return result

    def pieces(self, doc: spacy.tokens.Doc, text: str) -> list[Piece]:
        """Pieces of ``doc``, the tokenisation of ``text`` (passed in: ``doc.text`` is slow)."""
        out: list[Piece] = []
        # token offsets as one array: avoids building a Token object per token
        for base, length in doc.to_array([IDX, LENGTH]).tolist():
            token_text = text[base : base + length]
            if token_text.isspace():
                continue
            for start, end, piece_text, norm in self.split_token(token_text):
                out.append(Piece(base + start, base + end, piece_text, norm))
        return out
