"""Peak memory of ``lesanet kg load`` against the size of the records file.

Writes synthetic prediction records (``bench.kg.synthetic_records``: 171 scored labels
per lesion) as JSON lines and as one JSON list at each size, runs ``lesanet kg load``
on each into a fresh store in a child process, and reports the child's peak resident
memory (``ru_maxrss``). A loader that reads the file whole grows with it; a streaming
one stays flat. The ontology load is part of every run (its share is the 0-record
baseline).

    .venv/bin/python -m bench.kg_load_memory --lesions 0 500 2000 8000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.kg import synthetic_records

ROOT = Path(__file__).resolve().parents[1]


def write_records(onto, n: int, folder: Path) -> tuple[Path, Path]:
    lines, listed = folder / f"p{n}.jsonl", folder / f"p{n}.json"
    with lines.open("w") as jl, listed.open("w") as js:
        js.write("[\n")
        for i, record in enumerate(synthetic_records(onto, n, seed=0)):
            text = json.dumps(record)
            jl.write(text + "\n")
            js.write(("," if i else "") + text + "\n")
        js.write("]\n")
    return lines, listed


def peak_rss_mib(path: Path, store: Path) -> tuple[float, int, float]:
    """Run ``kg load`` in a child; (its peak RSS in MiB, exit code, wall seconds)."""
    code = (
        "import resource, sys, cli; rc = cli.main(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, "kg", "load", str(path), "--store", str(store)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    kib = int(done.stderr.strip().splitlines()[-1])
    return kib / 1024, done.returncode, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lesions", type=int, nargs="+", default=[0, 500, 2000, 8000])
    args = parser.parse_args(argv)
    from ontology import load_ontology

    onto = load_ontology()
    print("| lesions | format | file | peak RSS of `kg load` | wall time |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in args.lesions:
            for path in write_records(onto, n, folder):
                store = folder / f"store-{path.name}"
                rss, code, seconds = peak_rss_mib(path, store)
                if code != 0:
                    raise SystemExit(f"kg load {path.name} exited {code}")
                size = path.stat().st_size / (1 << 20)
                print(
                    f"| {n:,} | {path.suffix[1:]} | {size:,.1f} MiB | {rss:,.0f} MiB | {seconds:,.0f} s |", flush=True
                )
                subprocess.run(["rm", "-rf", str(store), str(path)], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
