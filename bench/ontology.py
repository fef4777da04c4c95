"""Benchmark: ontology load time, and label expansion + exclusive lookup throughput.

Over the 20,266 training label lists of the official JSON, side by side with a plain-Python
reading of the spreadsheet's parent lists (walk parents per label, no precomputation).

    .venv/bin/python -m bench.ontology [--data ../shared/data/lesanet]

(Run bench scripts with -m from the project root: as plain scripts their file names would
shadow the packages they measure.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import openpyxl

from ontology import load_ontology
from ontology import model as ontology_model

ROOT = Path(__file__).resolve().parents[1]


def plain_spreadsheet(xlsx: Path) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, list[str]]]:
    """parents, children and stated exclusions straight from the spreadsheet columns."""
    rows = list(openpyxl.load_workbook(xlsx, read_only=True).worksheets[0].iter_rows(min_row=2, values_only=True))
    split = lambda cell: [s.strip() for s in str(cell or "").split("|") if s.strip()]  # noqa: E731
    parents = {r[2]: split(r[6]) for r in rows}
    children: dict[str, list[str]] = {}
    for child, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(child)
    exclusive = {r[2]: split(r[5]) for r in rows}
    return parents, children, exclusive


def plain_expand(labels: list[str], parents: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    stack = list(labels)
    while stack:
        name = stack.pop()
        if name not in out:
            out.add(name)
            stack.extend(parents.get(name, []))
    return out


def plain_exclusive(expanded: set[str], children: dict[str, list[str]], exclusive: dict[str, list[str]]) -> set[str]:
    stated = {e for name in expanded for e in exclusive.get(name, [])}
    return plain_expand(list(stated), children)  # the stated ones and all their descendants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "lesanet")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    split = json.loads((args.data / "text_mined_labels_171_and_split.json").read_text())
    term_list = split["term_list"]
    label_lists = [[term_list[i] for i in set(ids)] for ids in split["train_relevant_labels"]]

    ontology_model._CACHE.clear()
    t0 = time.perf_counter()
    onto = load_ontology()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    parents, children, exclusive = plain_spreadsheet(args.data / "lesion_ontology_181022.xlsx")
    plain_load_s = time.perf_counter() - t0

    def ours() -> int:
        total = 0
        for labels in label_lists:
            expanded = onto.expand(labels)
            excluded = set().union(*(onto.exclusive(n) for n in expanded))
            total += len(expanded) + len(excluded)
        return total

    def plain() -> int:
        total = 0
        for labels in label_lists:
            expanded = plain_expand(labels, parents)
            total += len(expanded) + len(plain_exclusive(expanded, children, exclusive))
        return total

    def best(fn) -> float:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    ours_s, plain_s = best(ours), best(plain)
    n = len(label_lists)
    print(f"label lists: {n} (official training set)")
    print(
        f"load: ontology (OWL -> networkx, all reasoning precomputed) {load_s * 1000:.0f} ms; "
        f"plain spreadsheet parent lists {plain_load_s * 1000:.0f} ms"
    )
    print(
        f"expand + exclusive lookup: ontology {n / ours_s:,.0f} sets/s; plain spreadsheet walk {n / plain_s:,.0f} sets/s; "
        f"ratio {plain_s / ours_s:.2f}x"
    )
    print("note: the plain walk ignores composites and the defect fixes, so it is not the same answer")


if __name__ == "__main__":
    main()
