"""Benchmark of the text miner: dev-set scores and throughput, side by side with a plain lookup.

The plain lookup is the reference the issue names: spaCy's blank English tokenizer, the
lemma lookup table, and a dictionary of the ontology's names and synonyms (greedy longest
match), one sentence at a time, with parent expansion for scoring.

    taskset -c 0 .venv/bin/python bench/textmine.py [--data ../shared/data/lesanet] [--repeat 40]
        [--relations GOLD.jsonl ...] [--model relations.safetensors]

Prints the hand-labeled dev-set scores of the plain lookup and of the miner (rules
engine); relation scores of the rules engine (and of the CNN with ``--model``) on relation
JSONL gold files (default: the shipped hand-annotated files); then sentences/s of both
on the dev-set texts repeated ``--repeat`` times, best of ``--rounds`` interleaved rounds
(pin to one core with taskset: the issue's target is per core).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def score(pred_sets, items, allowed, onto):
    from textmine.evaluate import LabelScores, _canonical

    scores = LabelScores()
    for pred, item in zip(pred_sets, items):
        gold = {_canonical(onto, name) for name in item["expanded_terms"]}
        if allowed is not None:
            gold, pred = gold & allowed, pred & allowed
        scores.add(gold, pred)
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "lesanet"))
    parser.add_argument("--repeat", type=int, default=40, help="dev-set copies for the throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds; the best of each is reported")
    parser.add_argument(
        "--relations",
        nargs="*",
        default=None,
        metavar="GOLD.jsonl",
        help="relation JSONL gold files (default: textmine/data/relations_*.jsonl)",
    )
    parser.add_argument("--model", default=None, help="also score this relation CNN on the relation files")
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
        base = score(plain_sets, items, allowed, onto)
        mined = score_hand_labeled(miner, items, allowed)
        print(f"## scored over {universe} (macro over labels that occur in the gold)")
        for name, s in (("plain lookup", base), ("miner (rules)", mined)):
            print(
                f"{name:>15}: micro P {s.micro.precision:.4f} R {s.micro.recall:.4f} F1 {s.micro.f1:.4f}"
                f" | macro P {s.macro()['precision']:.4f} R {s.macro()['recall']:.4f} F1 {s.macro()['f1']:.4f}"
                f" ({s.macro()['labels']} labels)"
            )

    from textmine.evaluate import score_relations

    relation_files = args.relations
    if relation_files is None:
        relation_files = sorted(str(p) for p in (ROOT / "textmine" / "data").glob("relations_*.jsonl"))
    engines = [("rules", miner)]
    if args.model:
        engines.append(("model", LabelMiner(onto, engine="model", model_path=args.model)))
    for path in relation_files:
        print(f"# relations: {path}")
        for name, engine in engines:
            r = score_relations(engine, path)
            correct = sum(r.confusion[(c, c)] for c in ("relevant", "uncertain", "irrelevant"))
            total = sum(r.confusion.values())
            print(
                f"{name:>6}: relevant F1 {r.relevant.f1:.4f} | uncertain F1 {r.uncertain.f1:.4f}"
                f" | relation accuracy {correct}/{total} = {correct / max(1, total):.4f} ({r.n_texts} sentences)"
            )

    import gc

    gc.freeze()  # as `textmine run` does (textmine.jobs.run_file)
    corpus = texts * args.repeat
    records = [InputRecord(i + 1, i, t) for i, t in enumerate(corpus)]

    # CPU time of this process (time.process_time): on a shared machine, wall time also
    # counts the time other jobs hold the core
    def time_plain() -> float:
        t0 = time.process_time()
        for text in corpus:
            plain.labels(text)
        return len(corpus) / (time.process_time() - t0)

    def time_miner(expand: bool) -> float:
        t0 = time.process_time()
        for s in miner.mine_records(records, expand=expand):
            json.dumps(s.to_json(), ensure_ascii=False)
        return len(corpus) / (time.process_time() - t0)

    rounds = []
    for _ in range(args.rounds):  # interleaved, so a busy machine slows both alike
        rounds.append((time_plain(), time_miner(False), time_miner(True)))
    plain_rate, miner_rate, expand_rate = (max(r[i] for r in rounds) for i in range(3))
    ratio = statistics.median(r[1] / r[0] for r in rounds)
    ratio_x = statistics.median(r[2] / r[0] for r in rounds)
    print(
        f"# throughput (CPU time) on {len(corpus)} dev-set texts, one process: best of {args.rounds} rounds,"
        f" ratio = median over rounds of (miner / plain) measured back to back"
    )
    print(f"plain lookup (per sentence)      : {plain_rate:10.0f} sentences/s")
    print(f"miner rules, nlp.pipe + JSON     : {miner_rate:10.0f} sentences/s  ratio {ratio:.2f}x")
    print(f"miner rules --expand + JSON      : {expand_rate:10.0f} sentences/s  ratio {ratio_x:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
