"""Learned engine: a CNN relation classifier over the word sequence (after Peng et al.).

For one (sentence, label mention) pair the input is the sentence's pieces (lower-cased,
digits folded), each with two position features: its distance to the label mention and
to the ``BOOKMARK`` token (clipped; a separate bucket when the text has no bookmark).
Word and position embeddings are concatenated, convolved with windows 3, 4 and 5,
max-pooled over time, and classified into relevant / uncertain / irrelevant.

Training reads annotated JSONL (``text`` and ``mentions`` with ``start``, ``end``,
``relation``); the model is saved as one safetensors file whose metadata hold the config
and vocabulary (never a pickle).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ontology.files import atomic_path
from textmine.context import RELATIONS
from textmine.errors import TextmineError
from textmine.lexicon import LexiconMatch
from textmine.tokens import BOOKMARK, Piece

FORMAT = "lesanet-relation-cnn"
FORMAT_VERSION = "1"
PAD, UNK = "<pad>", "<unk>"
_DIGITS = re.compile(r"\d")


@dataclass
class RelationConfig:
    """Model and training settings (defaults: small, CPU-friendly)."""

    word_dim: int = 50
    position_dim: int = 10
    max_distance: int = 20  # positions are clipped to [-max_distance, max_distance]
    max_len: int = 60  # pieces kept around the mention
    windows: tuple[int, ...] = (3, 4, 5)
    filters: int = 64
    dropout: float = 0.5
    epochs: int = 25
    batch_size: int = 32
    learning_rate: float = 2e-3
    min_count: int = 1
    seed: int = 0
    threads: int = 1  # torch CPU threads while training (small model: more threads only contend)


@dataclass
class Example:
    words: list[str]
    mention: tuple[int, int]  # first, last piece (inclusive)
    bookmark: int | None
    relation: str | None = None


def piece_words(pieces: Sequence[Piece]) -> list[str]:
    return [p.text if p.is_bookmark else _DIGITS.sub("0", p.norm) for p in pieces]


def example_for(pieces: Sequence[Piece], first: int, last: int, relation: str | None = None) -> Example:
    bookmark = next((i for i, p in enumerate(pieces) if p.text == BOOKMARK), None)
    return Example(piece_words(pieces), (first, last), bookmark, relation)


class RelationCNN(nn.Module):
    def __init__(self, vocab_size: int, config: RelationConfig) -> None:
        super().__init__()
        self.config = config
        n_pos = 2 * config.max_distance + 2  # +1 bucket: "no bookmark"
        self.words = nn.Embedding(vocab_size, config.word_dim, padding_idx=0)
        self.to_mention = nn.Embedding(n_pos, config.position_dim)
        self.to_bookmark = nn.Embedding(n_pos, config.position_dim)
        width = config.word_dim + 2 * config.position_dim
        self.convs = nn.ModuleList(nn.Conv1d(width, config.filters, w, padding=w // 2) for w in config.windows)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.filters * len(config.windows), len(RELATIONS))

    def forward(
        self, words: torch.Tensor, pos_m: torch.Tensor, pos_b: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        x = torch.cat([self.words(words), self.to_mention(pos_m), self.to_bookmark(pos_b)], dim=-1).transpose(1, 2)
        pooled = []
        for conv in self.convs:
            h = torch.relu(conv(x))[:, :, : words.shape[1]]
            h = h.masked_fill(~mask[:, None, :], float("-inf"))
            pooled.append(h.max(dim=2).values)
        return self.out(self.dropout(torch.cat(pooled, dim=1)))


@dataclass
class RelationModel:
    """A trained classifier with its vocabulary; ``assign`` labels mentions like the rules engine."""

    net: RelationCNN
    vocab: dict[str, int]
    config: RelationConfig
    history: list[dict[str, float]] = field(default_factory=list)

    # ------------------------------------------------------------------ encoding
    def encode(self, examples: Sequence[Example]) -> tuple[torch.Tensor, ...]:
        cfg = self.config
        n = len(examples)
        words = torch.zeros((n, cfg.max_len), dtype=torch.long)
        pos_m = torch.zeros((n, cfg.max_len), dtype=torch.long)
        pos_b = torch.zeros((n, cfg.max_len), dtype=torch.long)
        mask = torch.zeros((n, cfg.max_len), dtype=torch.bool)
        no_bookmark = 2 * cfg.max_distance + 1
        unk = self.vocab[UNK]
        for row, ex in enumerate(examples):
            lo = max(0, min(ex.mention[0] - cfg.max_len // 2, len(ex.words) - cfg.max_len))
            window = ex.words[lo : lo + cfg.max_len]
            for col, word in enumerate(window):
                i = lo + col
                words[row, col] = self.vocab.get(word, unk)
                pos_m[row, col] = _bucket(_distance(i, ex.mention), cfg.max_distance)
                pos_b[row, col] = no_bookmark if ex.bookmark is None else _bucket(i - ex.bookmark, cfg.max_distance)
                mask[row, col] = True
        return words, pos_m, pos_b, mask

    @torch.no_grad()
    def predict(self, examples: Sequence[Example]) -> list[str]:
        if not examples:
            return []
        self.net.eval()
        logits = self.net(*self.encode(examples))
        return [RELATIONS[i] for i in logits.argmax(dim=1).tolist()]

    def assign(self, pieces: Sequence[Piece], mentions: list[LexiconMatch]) -> None:
        """Set ``relation`` of every mention (cue = "model")."""
        predicted = self.predict([example_for(pieces, m.first_piece, m.last_piece) for m in mentions])
        for mention, relation in zip(mentions, predicted):
            mention.relation, mention.cue = relation, "model"

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        metadata = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": json.dumps(asdict(self.config)),
            "vocab": json.dumps(sorted(self.vocab, key=self.vocab.__getitem__)),
            "history": json.dumps(self.history),
        }
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> RelationModel:
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except FileNotFoundError:
            raise
        except Exception as exc:  # safetensors raises its own error types for bad files
            raise TextmineError(f"{path}: not a safetensors relation model ({exc})") from exc
        if metadata.get("format") != FORMAT:
            raise TextmineError(f"{path}: not a {FORMAT} file (train one with `lesanet textmine train-relations`)")
        if metadata.get("version") != FORMAT_VERSION:
            raise TextmineError(
                f"{path}: model format version {metadata.get('version')}, this toolkit reads {FORMAT_VERSION}"
            )
        raw = json.loads(metadata["config"])
        raw["windows"] = tuple(raw["windows"])
        config = RelationConfig(**raw)
        words = json.loads(metadata["vocab"])
        vocab = {w: i for i, w in enumerate(words)}
        net = RelationCNN(len(vocab), config)
        net.load_state_dict(load_file(str(path)))
        net.eval()
        return cls(net, vocab, config, json.loads(metadata.get("history", "[]")))


def _distance(i: int, span: tuple[int, int]) -> int:
    return i - span[0] if i < span[0] else (i - span[1] if i > span[1] else 0)


def _bucket(d: int, limit: int) -> int:
    return max(-limit, min(limit, d)) + limit


def build_vocab(examples: Iterable[Example], min_count: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ex in examples:
        for w in ex.words:
            counts[w] = counts.get(w, 0) + 1
    vocab = {PAD: 0, UNK: 1}
    for w in sorted(counts):
        if counts[w] >= min_count:
            vocab[w] = len(vocab)
    return vocab


def train(
    examples: Sequence[Example], config: RelationConfig | None = None, val: Sequence[Example] = ()
) -> RelationModel:
    """Train from labelled examples (Adam, cross-entropy); one history row per epoch."""
    config = config or RelationConfig()
    if not examples:
        raise TextmineError("no training examples: the input has no mentions with a relation")
    torch.manual_seed(config.seed)
    torch.set_num_threads(max(1, config.threads))
    rng = random.Random(config.seed)
    vocab = build_vocab(examples, config.min_count)
    model = RelationModel(RelationCNN(len(vocab), config), vocab, config)
    optimizer = torch.optim.Adam(model.net.parameters(), lr=config.learning_rate)
    targets = torch.tensor([RELATIONS.index(ex.relation) for ex in examples])
    inputs = model.encode(examples)
    order = list(range(len(examples)))
    for epoch in range(config.epochs):
        model.net.train()
        rng.shuffle(order)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = torch.tensor(order[start : start + config.batch_size])
            logits = model.net(*(t[idx] for t in inputs))
            loss = nn.functional.cross_entropy(logits, targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        row = {"epoch": epoch + 1, "loss": round(total / len(order), 5)}
        if val:
            row["val_accuracy"] = round(accuracy(model, val), 4)
        model.history.append(row)
    model.net.eval()
    return model


def accuracy(model: RelationModel, examples: Sequence[Example]) -> float:
    predicted = model.predict(examples)
    return sum(p == ex.relation for p, ex in zip(predicted, examples)) / max(1, len(examples))


def examples_from_record(record: dict[str, Any], pieces: Sequence[Piece]) -> list[Example]:
    """Training examples of one annotated record; raises ValueError naming the bad mention."""
    mentions = record.get("mentions")
    if not isinstance(mentions, list) or not mentions:
        raise TextmineError("no `mentions` list")
    out = []
    for k, m in enumerate(mentions):
        if not isinstance(m, dict):
            raise TextmineError(f"mention {k} is not an object")
        start, end, relation = m.get("start"), m.get("end"), m.get("relation")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end):
            raise TextmineError(f"mention {k}: `start`/`end` must be integers with start < end")
        if relation not in RELATIONS:
            raise TextmineError(f"mention {k}: relation {relation!r} is not one of {', '.join(RELATIONS)}")
        covered = [i for i, p in enumerate(pieces) if p.start < end and p.end > start]
        if not covered:
            raise TextmineError(f"mention {k}: span {start}-{end} lies outside the text")
        out.append(example_for(pieces, covered[0], covered[-1], relation))
    return out
