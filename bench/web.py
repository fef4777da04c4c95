"""Lesion browser benchmark: the time to render each page type of ``kg serve``, end to end.

A real ``cli.py kg serve`` subprocess (as a user starts it) answers HTTP requests from
this process; each figure is the wall time from sending the request to the last byte of
the answer, median / 95th percentile / max over ``--repeats`` requests per page type
(after one warm-up round), against the 200 ms target of issue 17.

The store is the demo's when given (``--store demo-out/store --cache demo-out/cache
--evaluation demo-out/eval_test.json``); otherwise one of the demo's shape is built: the
demo predicts its test split (259 of 1,500 phantom lesions), so ``--lesions`` (default
259) synthetic prediction records (171 scored labels each, 5 neighbours; bench/kg.py's
generator), the mined sentences of ``--sentences`` when given, and the patches of
``--cache`` when given (records then take the cache's test lesions' indices) or a
synthetic cache.

    .venv/bin/python -m bench.web [--store DIR] [--cache CACHE] [--sentences mined.jsonl] [--repeats 20]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.kg import synthetic_records  # noqa: E402
from kg.store import LesionStore  # noqa: E402
from ontology import load_ontology  # noqa: E402

TARGET_MS = 200.0
DEMO_TEST_LESIONS = 259  # the demo's test split: what `lesanet demo` predicts and loads


def build_store(
    workdir: Path, onto: Any, n: int, cache: Path | None, sentences: Path | None
) -> tuple[Path, Path, list[str]]:
    """A demo-shaped store (and a synthetic cache when none is given); its lesion ids."""
    records = list(synthetic_records(onto, n, seed=0))
    if cache is not None:
        index = json.loads((cache / "index.json").read_text(encoding="utf-8"))
        test = [e["lesion_idx"] for e in index["lesions"] if e["split"] == "test"][:n]
        if len(test) < n:
            raise SystemExit(f"{cache} has {len(test)} test lesions, fewer than --lesions {n}")
        remap = {f"deeplesion/{i}": f"deeplesion/{idx}" for i, idx in enumerate(test)}
        for record, idx in zip(records, test):
            record["lesion_id"] = remap[record["lesion_id"]]
            record["source"]["lesion_idx"] = idx
            for neighbour in record["neighbors"]:
                neighbour["lesion_id"] = remap[neighbour["lesion_id"]]
    else:
        cache = workdir / "cache"
        cache.mkdir()
        rng = np.random.default_rng(0)
        patches = rng.integers(40, 200, size=(n, 3, 120, 120), dtype=np.uint8)
        entries = [
            {
                "row": i,
                "lesion_idx": i,
                "split": "test",
                "box": [40.0, 40.0, 80.0, 80.0],
                "relevant": [],
                "uncertain": [],
                "irrelevant": [],
                "truth": None,
                "sentence": None,
            }
            for i in range(n)
        ]
        np.save(cache / "patches.npy", patches)
        (cache / "index.json").write_text(
            json.dumps(
                {
                    "format": "lesanet-patch-cache",
                    "version": 1,
                    "term_list": [],
                    "ontology_version": onto.version,
                    "patch_size": 120,
                    "lesions": entries,
                }
            )
        )
    path = workdir / "store"
    store = LesionStore(path)
    store.load_ontology(onto)
    store.load_records(records, onto)
    if sentences is not None:
        store.load_files([sentences], onto=onto, errors=[])
    store.optimize()
    del store
    gc.collect()
    return path, cache, [r["lesion_id"] for r in records]


def start_server(store: Path, cache: Path, evaluation: Path | None, log: Path) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        str(ROOT / "cli.py"),
        "kg",
        "serve",
        "--store",
        str(store),
        "--port",
        "0",
        "--cache",
        str(cache),
    ]
    if evaluation is not None:
        command += ["--evaluation", str(evaluation)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    assert process.stdout is not None  # stdout=PIPE
    process.stdout.readline()
    line = process.stdout.readline()
    if not line.startswith("lesion browser at "):
        process.kill()
        raise SystemExit(f"kg serve did not start: {line!r}\n{log.read_text()[-2000:]}")
    return process, line.split()[-1].rstrip("/")


def fetch(url: str, data: bytes | None = None) -> tuple[float, int, int]:
    """(seconds, status, bytes) of one request; redirects are not followed."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if data else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    opener = urllib.request.build_opener(_NoRedirect)
    started = time.perf_counter()
    try:
        with opener.open(request, timeout=60) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return time.perf_counter() - started, status, len(body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def page_requests(lesions: list[str]) -> dict[str, list[tuple[str, bytes | None]]]:
    """Per page type, the requests of one round (several lesions / labels per type)."""
    q = lambda value: urllib.parse.quote(value, safe="")  # noqa: E731
    sample = lesions[:: max(1, len(lesions) // 5)][:5]
    pages: dict[str, list[tuple[str, bytes | None]]] = {
        "home": [("/", None)],
        "lesion": [(f"/lesion?id={q(lid)}", None) for lid in sample],
        "label (broad: abdomen)": [("/label?name=abdomen", None)],
        "label (narrow: kidney cyst)": [("/label?name=kidney%20cyst", None)],
        "search by label (lung, subclasses)": [("/search?by=label&q=lung", None)],
        "search by description": [
            ("/search?by=description&q=" + q(text), None)
            # descriptions the synthetic records answer (a page of hits, not none)
            for text in ("a mass in the liver", "cyst in the kidney", "small lung nodule")
        ],
        "search by lesion id (303)": [(f"/search?by=lesion&q={q(sample[0])}", None)],
        "SPARQL page": [("/sparql", None)],
        "SPARQL run (label-counts, table)": [
            (
                "/sparql",
                urllib.parse.urlencode(
                    {
                        "query": "SELECT ?label (COUNT(*) AS ?n) WHERE { ?label a owl:Class . ?l a ?label } GROUP BY ?label"
                    }
                ).encode(),
            )
        ],
        "patch PNG (rendered once, then kept)": [(f"/patch?id={q(lid)}", None) for lid in sample],
    }
    return pages


def measure(base: str, pages: dict[str, list[tuple[str, bytes | None]]], repeats: int) -> list[dict[str, Any]]:
    for requests in pages.values():  # warm-up: templates, the engine's caches, the text miner
        for path, data in requests:
            for _ in range(3):
                seconds, status, _ = fetch(base + path, data)
                if status in (200, 303):
                    break
                time.sleep(2)  # e.g. the miner still loading
    rows = []
    for name, requests in pages.items():
        times, statuses, sizes = [], set(), []
        for i in range(repeats):
            path, data = requests[i % len(requests)]
            seconds, status, size = fetch(base + path, data)
            times.append(seconds * 1000)
            statuses.add(status)
            sizes.append(size)
        times.sort()
        rows.append(
            {
                "page": name,
                "median_ms": statistics.median(times),
                "p95_ms": times[int(0.95 * (len(times) - 1))],
                "max_ms": times[-1],
                "status": sorted(statuses),
                "kb": statistics.median(sizes) / 1024,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=None, help="an existing store (e.g. demo-out/store)")
    parser.add_argument("--cache", type=Path, default=None, help="its patch cache (e.g. demo-out/cache)")
    parser.add_argument("--evaluation", type=Path, default=None, help="`lesanet evaluate --format json` output")
    parser.add_argument("--sentences", type=Path, default=None, help="mined sentences to load (built store only)")
    parser.add_argument("--lesions", type=int, default=DEMO_TEST_LESIONS, help="predicted lesions (built store only)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    onto = load_ontology()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        workdir = Path(tmp)
        if args.store is None:
            store, cache, lesions = build_store(workdir, onto, args.lesions, args.cache, args.sentences)
        else:
            if args.cache is None:
                raise SystemExit("--store needs --cache (the patches)")
            store, cache = args.store, args.cache
            from kg.canned import run_canned

            lesions = [
                str(r["lesionId"])
                for r in run_canned(
                    LesionStore(store, read_only=True), "lesions-with-label", onto, label="abdomen"
                ).values()
            ] or ["deeplesion/0"]
            gc.collect()
        process, base = start_server(store, cache, args.evaluation, workdir / "serve.log")
        try:
            rows = measure(base, page_requests(lesions), args.repeats)
        finally:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
    load_after = os.getloadavg()
    print(
        f"lesion browser, {len(lesions)} predicted lesions, {args.repeats} requests per page type; "
        f"load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"| page | median ms | p95 ms | max ms | KB | status | within {TARGET_MS:.0f} ms |")
    print("|---|---:|---:|---:|---:|---|---|")
    for row in rows:
        ok = "yes" if row["p95_ms"] <= TARGET_MS else "NO"
        print(
            f"| {row['page']} | {row['median_ms']:.1f} | {row['p95_ms']:.1f} | {row['max_ms']:.1f} | {row['kb']:.0f} | "
            f"{','.join(map(str, row['status']))} | {ok} |"
        )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "lesions": len(lesions),
                    "repeats": args.repeats,
                    "load_average": [load_before, load_after],
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0 if all(r["p95_ms"] <= TARGET_MS for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
