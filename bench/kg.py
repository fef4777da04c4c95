"""Knowledge-graph benchmark: predictions -> queryable store, and canned-query latency,
pyoxigraph (on-disk store) against rdflib's in-memory graph, same data, same run.

Synthetic prediction records in the docs/architecture.md format: every lesion gets all
171 scored labels as annotations (W3C Web Annotation, 8 triples each), decided labels
drawn from the ontology (a seed label expanded with its ancestors), 5 stored neighbours.

Two scales in one run:
  * ``--compare-lesions`` (default 1,000): both engines load the same records and run
    every canned query (the load also into pyoxigraph's in-memory store, for
    reference); the ratios come from here (rdflib cannot hold DeepLesion scale:
    ~45 M triples at ~0.5 KB each);
  * ``--lesions`` (default 32,735, DeepLesion): pyoxigraph alone, load time and the
    latency of each canned query against the 100 ms target.

    .venv/bin/python -m bench.kg [--lesions 32735] [--compare-lesions 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kg import rdf  # noqa: E402
from kg.canned import CANNED, bindings_for  # noqa: E402
from kg.store import LesionStore, RdflibStore  # noqa: E402
from ontology import load_ontology  # noqa: E402

DEEPLESION_LESIONS = 32_735
SEEDS = [
    "lung nodule",
    "liver mass",
    "kidney cyst",
    "right lung",
    "lymph node",
    "liver",
    "bone",
    "mediastinum",
    "adrenal gland",
    "pancreas",
    "pleural effusion",
    "soft tissue",
]
# Parameters of the canned queries: a broad label (many lesions) and one lesion.
PARAMS = {"label": "lung", "lesion": "deeplesion/7"}
MODEL = {"name": "LesaNet", "version": "0.1.0", "checkpoint_sha256": "0" * 64, "config": "paper"}


def synthetic_records(onto: Any, n: int, seed: int) -> Iterator[dict]:
    rng = random.Random(seed)
    label_set = onto.label_set("lesanet171")
    in_set = set(label_set)
    iris = {name: onto.iri(name) for name in label_set}
    seeds = [onto.term(s).name for s in SEEDS if s.lower() in {t.lower() for t in onto.terms}] or label_set[:10]
    expanded = {s: onto.expand([s]) & in_set for s in seeds}
    thresholds = {name: round(rng.uniform(0.2, 0.7), 4) for name in label_set}
    for i in range(n):
        positives = expanded[rng.choice(seeds)]
        labels = []
        for name in label_set:
            t = thresholds[name]
            score = rng.uniform(t, 1.0) if name in positives else rng.uniform(0.0, t * 0.99)
            labels.append({"label": name, "iri": iris[name], "score": score, "threshold": t, "decision": score >= t})
        yield {
            "lesion_id": f"deeplesion/{i}",
            "source": {
                "dataset": "deeplesion",
                "lesion_idx": i,
                "file": f"Images_png/{i // 4:06d}_01_01/{i % 300:03d}.png",
                "slice": i % 300,
                "box_px": [100.0 + i % 50, 120.0, 140.0 + i % 50, 170.5],
                "spacing_mm": [0.7, 0.7, 5.0],
            },
            "labels": labels,
            "model": MODEL,
            "ontology_version": onto.version,
            "neighbors": [{"lesion_id": f"deeplesion/{(i + k * 7) % n}", "distance": 0.05 * k} for k in range(1, 6)],
        }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def query_latencies(backend: Any, onto: Any, repeats: int) -> dict[str, tuple[float, int]]:
    """Median seconds per canned query (after one warm-up run) and its row count."""
    out = {}
    for query in CANNED.values():
        params = {p.name: PARAMS[p.kind] for p in query.params}
        bindings = bindings_for(query, params, onto)
        result = backend.query(query.text, bindings)  # warm-up
        times = [timed(lambda: backend.query(query.text, bindings))[0] for _ in range(repeats)]
        out[query.name] = (statistics.median(times), len(result.rows))
    return out


def load_oxigraph(path: Path | None, onto: Any, records: list[dict]) -> tuple[float, LesionStore, int]:
    """Ontology + records into a pyoxigraph store on disk at ``path`` (in memory if None)."""
    store = LesionStore(path)

    def load() -> int:
        store.load_ontology(onto)
        triples = store.load_records(records, onto)
        store.optimize()  # part of "queryable": fresh bulk loads query several times slower
        return triples

    seconds, triples = timed(load)
    return seconds, store, triples


def load_rdflib(onto: Any, records: list[dict]) -> tuple[float, RdflibStore]:
    """The same ontology graphs and N-Triples text into an rdflib ``Dataset``: parsed by
    pyoxigraph, terms interned, ``addN`` (about 2x faster than rdflib's own N-Triples
    parser, and close to adding prebuilt terms), so the baseline is rdflib at its best."""
    store = RdflibStore()

    def load() -> None:
        store.load_ontology(onto)
        store.load_ntriples(rdf.prediction_ntriples(records, onto))

    seconds, _ = timed(load)
    return seconds, store


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def compare(onto: Any, n: int, seed: int, repeats: int, workdir: Path) -> dict[str, Any]:
    """Both engines, same records: load time and per-query latency, with ratios."""
    records = list(synthetic_records(onto, n, seed))
    print(f"comparison: {n:,} lesions x 171 labels = {n * 171:,} annotations")
    t_ox, ox_store, triples = load_oxigraph(workdir / "compare", onto, records)
    gc.collect()
    t_mem, mem_store, _ = load_oxigraph(None, onto, records)
    del mem_store
    gc.collect()
    t_rdf, rdf_store = load_rdflib(onto, records)
    del records
    print(f"  load to a queryable store ({triples:,} prediction triples + ontology):")
    print(f"    pyoxigraph (disk)    {t_ox:8.2f} s   {triples / t_ox:,.0f} triples/s   {t_rdf / t_ox:5.1f}x")
    print(f"    pyoxigraph (memory)  {t_mem:8.2f} s   {triples / t_mem:,.0f} triples/s   {t_rdf / t_mem:5.1f}x")
    print(
        f"    rdflib (memory)      {t_rdf:8.2f} s   {triples / t_rdf:,.0f} triples/s   (target: pyoxigraph >= 5x faster)"
    )
    rdf_repeats = max(1, min(repeats, 3))
    q_ox = query_latencies(ox_store, onto, repeats)
    q_rdf = query_latencies(rdf_store, onto, rdf_repeats)
    print(
        f"  canned queries (median of {repeats} / {rdf_repeats}; label={PARAMS['label']!r}, lesion={PARAMS['lesion']!r}):"
    )
    print(f"    {'query':<26} {'rows':>6} {'pyoxigraph':>12} {'rdflib':>12} {'ratio':>8}")
    ratios = {}
    for name, (sec, rows) in q_ox.items():
        other, other_rows = q_rdf[name]
        assert rows == other_rows, f"{name}: {rows} rows on pyoxigraph, {other_rows} on rdflib"
        ratios[name] = other / sec
        print(f"    {name:<26} {rows:>6} {ms(sec):>12} {ms(other):>12} {ratios[name]:>7.1f}x")
    print(
        f"    smallest ratio {min(ratios.values()):.1f}x (target >= 10x), geometric mean "
        f"{statistics.geometric_mean(ratios.values()):.1f}x"
    )
    return {
        "lesions": n,
        "prediction_triples": triples,
        "load_s": {"pyoxigraph": t_ox, "pyoxigraph_memory": t_mem, "rdflib": t_rdf},
        "query_s": {k: {"pyoxigraph": q_ox[k][0], "rdflib": q_rdf[k][0], "rows": q_ox[k][1]} for k in q_ox},
    }


def at_scale(onto: Any, n: int, seed: int, repeats: int, workdir: Path) -> dict[str, Any]:
    """pyoxigraph alone at ``n`` lesions: load time, store size, per-query latency."""
    print(f"scale: {n:,} lesions x 171 labels = {n * 171:,} annotations (pyoxigraph)")
    records = list(synthetic_records(onto, n, seed))
    t_load, store, triples = load_oxigraph(workdir / "full", onto, records)
    del records
    gc.collect()
    size = sum(f.stat().st_size for f in (workdir / "full").rglob("*") if f.is_file())
    print(
        f"  load {triples:,} triples: {t_load:.1f} s ({triples / t_load:,.0f} triples/s), "
        f"store {size / 2**30:.2f} GiB on disk"
    )
    latencies = query_latencies(store, onto, repeats)
    print(f"    {'query':<26} {'rows':>7} {'pyoxigraph':>12}  under 100 ms")
    for name, (sec, rows) in latencies.items():
        print(f"    {name:<26} {rows:>7} {ms(sec):>12}  {'yes' if sec < 0.1 else 'NO'}")
    return {
        "lesions": n,
        "prediction_triples": triples,
        "load_s": t_load,
        "store_bytes": size,
        "query_s": {name: {"pyoxigraph": sec, "rows": rows} for name, (sec, rows) in latencies.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--lesions", type=int, default=DEEPLESION_LESIONS, help="pyoxigraph-only scale (default DeepLesion); 0 skips it"
    )
    parser.add_argument(
        "--compare-lesions", type=int, default=1000, help="scale of the side-by-side comparison; 0 skips it"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per query (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the on-disk stores go (default: a temp dir, removed)")
    parser.add_argument("--json", default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    onto = load_ontology()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-kg-"))
    figures: dict[str, Any] = {}
    try:
        if args.compare_lesions > 0:
            figures["compare"] = compare(onto, args.compare_lesions, args.seed, args.repeats, workdir)
            gc.collect()
        if args.lesions > 0:
            figures["scale"] = at_scale(onto, args.lesions, args.seed, args.repeats, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
