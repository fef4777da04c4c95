"""Benchmark of the text miner: dev-set scores and throughput, side by side with a plain lookup.

The plain lookup is the reference the issue names: spaCy's blank English tokenizer, the
lemma lookup table, and a dictionary of the ontology's names and synonyms (greedy longest
match), one sentence at a time, with parent expansion for scoring.

    .venv/bin/python bench/textmine.py [--data ../shared/data/lesanet] [--repeat 40]

Prints the hand-labeled dev-set scores of the plain lookup and of the miner (rules
engine), then sentences/s of both on the dev-set texts repeated ``--repeat`` times, on one
core (torch/BLAS threads are not used by either).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class PlainLookup:
    """Blank spaCy tokenizer + lemma table + synonym dictionary; greedy longest match."""

    def __init__(self, onto) -> None:
        import spacy

        from textmine.lexicon import lemma_table

        self.nlp = spacy.blank("en")
        self.lemmas = lemma_table()
        self.table: dict[tuple[str, ...], str] = {}
        for name, term in onto.terms.items():
            for phrase in (name, *term.synonyms):
                key = tuple(self.lemmas.get(w, w) for w in self._words(phrase))
                self.table.setdefault(key, name)
        self.max_len = max(len(k) for k in self.table)

    def _words(self, text: str) -> list[str]:
        return [t.lower_ for t in self.nlp(text) if not t.is_space]

    def labels(self, text: str) -> set[str]:
        words = [self.lemmas.get(w, w) for w in self._words(text)]
        found, i = set(), 0
        while i < len(words):
            for n in range(min(self.max_len, len(words) - i), 0, -1):
                label = self.table.get(tuple(words[i : i + n]))
                if label is not None:
                    found.add(label)
                    i += n
                    break
            else:
                i += 1
        return found


def score(pred_sets, items, allowed):
    from textmine.evaluate import LabelScores

    scores = LabelScores()
    for pred, item in zip(pred_sets, items):
        gold = set(item["expanded_terms"])
        if allowed is not None:
            gold, pred = gold & allowed, pred & allowed
        scores.add(gold, pred)
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "lesanet"))
    parser.add_argument("--repeat", type=int, default=40, help="dev-set copies for the throughput run")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from ontology import load_ontology
    from textmine.evaluate import load_hand_labeled, score_hand_labeled
    from textmine.pipeline import LabelMiner
    from textmine.records import InputRecord

    onto = load_ontology()
    items = load_hand_labeled(Path(args.data) / "hand_labeled_dev.json")
    texts = [item["text"] for item in items]
    plain = PlainLookup(onto)
    miner = LabelMiner(onto, engine="rules")

    print(f"# hand_labeled_dev.json: {len(items)} texts; predictions = expanded relevant + uncertain")
    plain_sets = [onto.expand(plain.labels(t)) for t in texts]
    for universe, allowed in (("all ontology labels", None), ("lesanet171 labels", set(onto.label_set("lesanet171")))):
        base = score(plain_sets, items, allowed)
        mined = score_hand_labeled(miner, items, allowed)
        print(f"## scored over {universe} (macro over labels that occur in the gold)")
        for name, s in (("plain lookup", base), ("miner (rules)", mined)):
            print(f"{name:>15}: micro P {s.micro.precision:.4f} R {s.micro.recall:.4f} F1 {s.micro.f1:.4f}"
                  f" | macro P {s.macro()['precision']:.4f} R {s.macro()['recall']:.4f} F1 {s.macro()['f1']:.4f}"
                  f" ({s.macro()['labels']} labels)")

    corpus = texts * args.repeat
    records = [InputRecord(i + 1, i, t) for i, t in enumerate(corpus)]
    t0 = time.perf_counter()
    for text in corpus:
        plain.labels(text)
    plain_rate = len(corpus) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    lines = [json.dumps(s.to_json()) for s in miner.mine_records(records)]
    miner_rate = len(lines) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for s in miner.mine_records(records, expand=True):
        json.dumps(s.to_json())
    expand_rate = len(corpus) / (time.perf_counter() - t0)
    print(f"# throughput on {len(corpus)} dev-set texts, one process")
    print(f"plain lookup (per sentence)      : {plain_rate:10.0f} sentences/s")
    print(f"miner rules, nlp.pipe + JSON     : {miner_rate:10.0f} sentences/s  ratio {miner_rate / plain_rate:.2f}x")
    print(f"miner rules --expand + JSON      : {expand_rate:10.0f} sentences/s  ratio {expand_rate / plain_rate:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
