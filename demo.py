"""`lesanet demo`: the whole paper on the embedded default data, a synthetic CT phantom.

The demo is a fixed list of ``lesanet`` commands — exactly what a user would type — run
in this process, followed by a cross-check (SPARQL counts against the JSON predictions)
and an HTML report. The report lists the commands, so every number in it can be
reproduced one step at a time. Everything is written under the output folder.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ontology.errors import LesanetError
from ontology.files import write_text_atomic
from vision.evaluation.evaluate import TABLE2_COLUMNS

PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "cpu-small.yaml"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs on; the defaults are the documented demo."""

    out_dir: Path = Path("demo-out")
    lesions: int = 1500
    seed: int = 0
    model_config: Path = DEFAULT_CONFIG
    epochs: int | None = None  # None: the config's schedule
    workers: int = 2
    ablate: bool = False  # also the one-seed ablation table (8 trainings: several times the demo's length)


@dataclass(frozen=True)
class Step:
    """One ``lesanet`` command of the demo; ``stdout`` captures its output into a file."""

    key: str
    title: str
    argv: tuple[str, ...]
    stdout: Path | None = None

    def command(self) -> str:
        line = "lesanet " + " ".join(shlex.quote(a) for a in self.argv)
        return f"{line} > {shlex.quote(str(self.stdout))}" if self.stdout else line


@dataclass
class StepResult:
    step: Step
    seconds: float
    exit_code: int


@dataclass
class DemoResult:
    config: DemoConfig
    steps: list[StepResult] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    def summary_lines(self) -> list[str]:
        """The headline figures for the terminal."""
        out = self.config.out_dir
        test = _load_json(out / "eval_test.json")["sets"][0]["averages"]
        truth = _load_json(out / "eval_truth.json")["sets"][0]["averages"]
        mining = _load_json(out / "mining_eval.json")
        checks = self.checks
        return [
            f"mining vs phantom relations: relevant F1 {mining['relevant']['f1']:.3f}, uncertain F1 {mining['uncertain']['f1']:.3f}",
            f"test mean AUC {test['auc']:.3f} / F1 {test['f1']:.3f} (text-mined labels); "
            f"{truth['auc']:.3f} / {truth['f1']:.3f} (complete truth)",
            f"SPARQL decided-label counts {'match' if checks['counts_match'] else 'DO NOT match'} the JSON predictions "
            f"({checks['decided_labels_sparql']} vs {checks['decided_labels_json']})",
            f"browse the lesions: {browse_command(self.config)}",
        ]


def browse_command(cfg: DemoConfig) -> str:
    """The one command that serves the demo's store with the lesion browser and opens it."""
    out = cfg.out_dir
    argv = (
        "kg",
        "serve",
        "--store",
        str(out / "store"),
        "--cache",
        str(out / "cache"),
        "--run",
        str(out / "run"),
        "--evaluation",
        str(out / "eval_test.json"),
        "--open",
    )
    return "lesanet " + " ".join(shlex.quote(a) for a in argv)


class DemoError(LesanetError, RuntimeError):
    """A demo step failed; names the step and its command."""


def plan(cfg: DemoConfig) -> list[Step]:
    """The demo's commands, in order."""
    out = cfg.out_dir
    phantom, cache, run = out / "phantom", out / "cache", out / "run"
    figures, store = out / "figures", out / "store"
    epochs = ("--epochs", str(cfg.epochs)) if cfg.epochs else ()
    steps = [
        Step(
            "synth",
            "Synthesise the CT phantom and its report sentences",
            (
                "synth",
                "-o",
                str(phantom),
                "--lesions",
                str(cfg.lesions),
                "--seed",
                str(cfg.seed),
                "--workers",
                str(cfg.workers),
                "--overwrite",
            ),
        ),
        Step(
            "mine",
            "Mine labels and relations from the sentences (rules engine)",
            ("textmine", "run", str(phantom / "sentences.jsonl"), "-o", str(out / "mined.jsonl")),
        ),
        Step(
            "mine-eval",
            "Score the miner against the phantom's known relations",
            ("textmine", "eval", str(phantom / "sentences.jsonl"), "--json"),
            out / "mining_eval.json",
        ),
        Step(
            "split",
            "Turn mined labels into the official label/split format (phantom's patient splits)",
            (
                "textmine",
                "build-split",
                str(out / "mined.jsonl"),
                "--reference",
                str(phantom / "labels.json"),
                "-o",
                str(out / "mined_labels.json"),
            ),
        ),
        Step(
            "cache",
            "Preprocess every lesion once into the patch cache",
            (
                "data",
                "cache",
                "--deeplesion",
                str(phantom),
                "--labels",
                str(out / "mined_labels.json"),
                "-o",
                str(cache),
                "--truth",
                str(phantom / "truth.json"),
                "--workers",
                str(cfg.workers),
            ),
        ),
        Step(
            "patches",
            "Draw a few cached patches with their true labels",
            ("data", "show", str(cache), "-o", str(figures / "phantom_patches.png")),
        ),
        Step(
            "train",
            "Train LesaNet (CPU config) on the mined labels",
            ("train", "--config", str(cfg.model_config), "--data", str(cache), "-o", str(run), *epochs),
        ),
        Step(
            "eval-test",
            "Calibrate thresholds on validation; evaluate on the text-mined test set",
            (
                "evaluate",
                str(run),
                "--data",
                str(cache),
                "--split",
                "test",
                "--calibrate",
                "--format",
                "json",
                "--figures",
                str(figures),
                "-o",
                str(out / "eval_test.json"),
            ),
        ),
        Step(
            "eval-truth",
            "Evaluate on the complete-truth test set (the phantom's true labels)",
            (
                "evaluate",
                str(run),
                "--data",
                str(cache),
                "--split",
                "hand",
                "--exclusive-filter",
                "--format",
                "json",
                "-o",
                str(out / "eval_truth.json"),
            ),
        ),
        Step(
            "embed",
            "Embed every lesion once for retrieval",
            ("embed", str(run), "--data", str(cache), "-o", str(out / "embeddings")),
        ),
        Step(
            "retrieval-quality",
            "Retrieval precision@5: embedding vs score vector",
            ("retrieve", str(run), "--embeddings", str(out / "embeddings"), "--quality", "--json"),
            out / "retrieval_quality.json",
        ),
        Step(
            "predict",
            "Predict the test set (scores, decisions with exclusive filtering, neighbours); write RDF",
            (
                "predict",
                str(run),
                "--data",
                str(cache),
                "--split",
                "test",
                "--json",
                "--exclusive-filter",
                "--embeddings",
                str(out / "embeddings"),
                "--patch-png",
                str(figures / "predictions.png"),
                "--rdf",
                str(out / "predictions.ttl"),
                "-o",
                str(out / "predictions.json"),
            ),
        ),
        Step(
            "predict-png",
            "Predict two lesions straight from the phantom's PNG slices (the user-data path)",
            (
                "predict",
                str(run),
                "--deeplesion",
                str(phantom),
                "--lesion",
                "0",
                "1",
                "--json",
                "--rdf",
                str(out / "sample_predictions.ttl"),
                "-o",
                str(out / "sample_predictions.json"),
            ),
        ),
        Step(
            "shacl",
            "Validate emitted RDF against the SHACL shapes (pyshacl is slow: the two-lesion sample)",
            ("kg", "validate", str(out / "sample_predictions.ttl")),
        ),
        Step(
            "kg-load",
            "Load the ontology, predictions and mined training labels into the SPARQL store",
            ("kg", "load", str(out / "predictions.ttl"), str(out / "mined.jsonl"), "--store", str(store)),
        ),
        Step(
            "q-counts",
            "SPARQL: lesions per decided label",
            (
                "kg",
                "find",
                "--counts",
                "--store",
                str(store),
                "--format",
                "json",
                "-o",
                str(out / "sparql_counts.json"),
            ),
        ),
        Step(
            "q-label",
            "SPARQL: lesions labelled 'lung nodule' or any subclass",
            (
                "kg",
                "find",
                "--label",
                "lung nodule",
                "--store",
                str(store),
                "--format",
                "json",
                "-o",
                str(out / "sparql_lung_nodule.json"),
            ),
        ),
        Step(
            "q-pairs",
            "SPARQL: label co-occurrence counts",
            ("kg", "find", "--pairs", "--store", str(store), "--format", "json", "-o", str(out / "sparql_pairs.json")),
        ),
        Step(
            "q-violations",
            "SPARQL: lesions whose decided labels break an exclusion",
            (
                "kg",
                "find",
                "--violations",
                "--store",
                str(store),
                "--format",
                "json",
                "-o",
                str(out / "sparql_violations.json"),
            ),
        ),
    ]
    if cfg.ablate:  # after the main run's evaluation, before the slower RDF and SPARQL steps
        position = [s.key for s in steps].index("eval-truth") + 1
        steps.insert(
            position,
            Step(
                "ablate",
                "Ablations (Table 1): the baseline, LesaNet and each 'without X', one seed",
                (
                    "ablate",
                    "--config",
                    str(cfg.model_config),
                    "--data",
                    str(cache),
                    "-o",
                    str(out / "ablation"),
                    "--resume",
                    "--quiet",
                    *epochs,
                ),
                out / "ablation.md",
            ),
        )
    return steps


# The steps that turn a phantom seed into a patch cache (synthesise, mine, build the split, cache).
DATA_STEPS = ("synth", "mine", "mine-eval", "split", "cache")


def data_steps(cfg: DemoConfig) -> list[Step]:
    """The demo's data chain alone: phantom -> mined labels -> patch cache."""
    return [step for step in plan(cfg) if step.key in DATA_STEPS]


def prepare_data(
    cfg: DemoConfig, run_command: Callable[[list[str]], int], log: Callable[[str], None] = lambda line: None
) -> Path:
    """Build (or reuse) a seed's patch cache with the demo's data chain; returns the cache folder.

    The cache writes its ``index.json`` last, so a cache with one is complete; a chain cut
    short is rebuilt from the phantom on (``synth --overwrite``).
    """
    cache = cfg.out_dir / "cache"
    if (cache / "index.json").is_file():
        log(f"        {cache} exists, reused")
        return cache
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    for step in data_steps(cfg):
        log(f"        $ {step.command()}")
        code = _run_step(step, run_command)
        if code != 0:
            raise DemoError(f"data step {step.key!r} failed (exit {code}): {step.command()}")
    return cache


def run_demo(
    cfg: DemoConfig,
    run_command: Callable[[list[str]], int],
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> DemoResult:
    """Run every step with ``run_command`` (the CLI's ``main``), check, and write the report."""
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    # matplotlib keeps a font cache in the home folder; keep it inside the demo folder.
    os.environ.setdefault("MPLCONFIGDIR", str(cfg.out_dir / ".matplotlib"))
    result = DemoResult(cfg)
    steps = plan(cfg)
    for number, step in enumerate(steps, start=1):
        log(f"[{number}/{len(steps)}] {step.title}\n        $ {step.command()}")
        started = time.perf_counter()
        code = _run_step(step, run_command)
        seconds = time.perf_counter() - started
        result.steps.append(StepResult(step, seconds, code))
        if code != 0:
            raise DemoError(f"demo step {step.key!r} failed (exit {code}): {step.command()}")
        log(f"        done in {seconds:.1f} s")
    result.checks = cross_check(cfg.out_dir)
    result.report = write_report(result)
    return result


def _run_step(step: Step, run_command: Callable[[list[str]], int]) -> int:
    if step.stdout is None:
        return run_command(list(step.argv))
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = run_command(list(step.argv))
    write_text_atomic(step.stdout, buffer.getvalue())
    return code


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _rows(sparql_json: Any) -> list[dict[str, str]]:
    """Rows of a SPARQL 1.1 JSON result (``kg find --format json``) as {variable: value}."""
    return [{var: cell["value"] for var, cell in row.items()} for row in sparql_json["results"]["bindings"]]


def cross_check(out: Path) -> dict[str, Any]:
    """The report's promises, checked: SPARQL counts equal counts from the JSON predictions."""
    predictions = _load_json(out / "predictions.json")
    records = predictions if isinstance(predictions, list) else [predictions]
    from_json: Counter[str] = Counter()
    for record in records:
        for entry in record["labels"]:
            if entry["decision"]:
                from_json[entry["label"]] += 1
    from_sparql = {r["name"]: int(r["lesions"]) for r in _rows(_load_json(out / "sparql_counts.json")) if r.get("name")}
    mismatches = {
        name: (from_json.get(name, 0), from_sparql.get(name, 0))
        for name in sorted(set(from_json) | set(from_sparql))
        if from_json.get(name, 0) != from_sparql.get(name, 0)
    }
    return {
        "predicted_lesions": len(records),
        "decided_labels_json": sum(from_json.values()),
        "decided_labels_sparql": sum(from_sparql.values()),
        "counts_match": not mismatches,
        "mismatches": mismatches,
    }


# --------------------------------------------------------------------------- report


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in (headers or columns))
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(out: Path, relative: str, caption: str) -> str:
    if not (out / relative).exists():
        return f"<p><em>{html.escape(caption)}: not produced.</em></p>"
    return f'<figure><img src="{html.escape(relative)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


REPRODUCTION_DOC = PROJECT_ROOT / "docs" / "reproduction.md"


def _ablation_html(out: Path) -> str:
    """The one-seed ablation table of ``demo --ablate`` (empty when it was not run)."""
    path = out / "ablation" / "table1.json"
    if not path.is_file():
        return ""
    rows = _load_json(path)["table1"]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return (
        f"<h2>Ablations — one seed (lesanet demo --ablate)</h2>\n{_table(rows, columns)}\n"
        "<p>One seed is an anecdote: the differences between rows are compared with their error bars "
        "in docs/reproduction.md.</p>"
    )


def write_report(result: DemoResult) -> Path:
    out = result.config.out_dir
    test = _load_json(out / "eval_test.json")
    truth = _load_json(out / "eval_truth.json")
    mining = _load_json(out / "mining_eval.json")
    retrieval = _load_json(out / "retrieval_quality.json")
    counts = _rows(_load_json(out / "sparql_counts.json"))
    nodules = _rows(_load_json(out / "sparql_lung_nodule.json"))
    pairs = _rows(_load_json(out / "sparql_pairs.json"))
    violations = _rows(_load_json(out / "sparql_violations.json"))
    figures = sorted(p.relative_to(out).as_posix() for p in (out / "figures").glob("*.png"))

    test, truth = test["sets"][0], truth["sets"][0]  # `evaluate --format json` lists its evaluated sets
    metric_cols = ["auc", "precision", "recall", "f1", "micro_f1", "weighted_auc", "n_labels"]
    table1 = [
        {"test set": "text-mined labels", **test["averages"]},
        {"test set": "complete truth", **truth["averages"]},
    ]
    if truth.get("exclusive_filtered"):
        table1.append({"test set": "complete truth, exclusive filter", **truth["exclusive_filtered"]})
    by_group = [{"group": k, **v} for k, v in {**truth["by_category"], **truth["by_frequency"]}.items()]
    label_rows = sorted(
        (r for r in truth["labels"] if r.get("evaluable", True)), key=lambda r: -(r.get("train_positives") or 0)
    )
    label_cols = [c for c in TABLE2_COLUMNS if c in (label_rows[0] if label_rows else {})]

    mining_rows = [{"set": k, **mining[k]} for k in ("relevant", "uncertain") if k in mining]
    retrieval_rows = [{"retrieval by": k, **v} for k, v in retrieval.items()]
    retrieval_cols = list(retrieval_rows[0])[1:] if retrieval_rows else []
    checks = result.checks
    steps_rows = [
        {"step": s.step.key, "seconds": round(s.seconds, 1), "command": s.step.command()} for s in result.steps
    ]
    commands = "\n".join(s.step.command() for s in result.steps)
    ablation_html = _ablation_html(out)
    reproduction = html.escape(os.path.relpath(REPRODUCTION_DOC, out.resolve()))
    summary = (
        f"{checks['predicted_lesions']} test lesions predicted; test mean AUC {test['averages']['auc']:.3f} "
        f"(text-mined labels), {truth['averages']['auc']:.3f} (complete truth); "
        f"total {result.seconds / 60:.1f} min"
    )
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>LesaNet demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; line-height: 1.4; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
pre {{ background: #f4f4f4; padding: 1em; overflow-x: auto; font-size: 0.85em; }}
figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
.ok {{ color: #137333; }} .bad {{ color: #b3261e; }}
</style></head><body>
<h1>LesaNet demo report</h1>
<p>{html.escape(summary)}. Phantom: {result.config.lesions} lesions, seed {result.config.seed};
model config <code>{html.escape(str(result.config.model_config))}</code>.</p>

<h2>Table 1 — mean per-label metrics on the test set</h2>
{_table(table1, ["test set", *metric_cols], ["test set", "mean AUC", "mean P", "mean R", "mean F1", "micro F1", "weighted AUC", "labels"])}
<p>Thresholds: best F1 per label on the validation set, applied to the test set.
Uncertain lesion-label pairs are left out; labels with no positive or no negative are left out of the means.</p>

<p>Whether these figures reproduce the paper's conclusions — each ablation, the label-subset
experiment, retrieval and the ontology figures, over several seeds with error bars — is in
<a href="{reproduction}">docs/reproduction.md</a> (generated by <code>lesanet ablate --seeds</code>).</p>
{ablation_html}
<h2>By category and by training frequency (complete truth)</h2>
{_table(by_group, ["group", *metric_cols])}

<h2>Mining accuracy against the phantom's known relations</h2>
{_table(mining_rows, ["set", "precision", "recall", "f1"])}

<h2>Retrieval</h2>
{_table(retrieval_rows, ["retrieval by", *retrieval_cols])}

<h2>Figures</h2>
{"".join(_figure(out, f, Path(f).stem.replace("_", " ")) for f in figures)}

<h2>SPARQL over the ontology and the predictions</h2>
<p class="{"ok" if checks["counts_match"] else "bad"}">Decided labels per label: SPARQL {checks["decided_labels_sparql"]}
vs JSON predictions {checks["decided_labels_json"]} — {"they match" if checks["counts_match"] else "MISMATCH: " + html.escape(json.dumps(checks["mismatches"]))}.</p>
<p>Lesions labelled <em>lung nodule</em> or a subclass: {len(nodules)}. Lesions whose decided labels break an exclusion: {len(violations)}.</p>
<p>Browse every lesion, label and query in the lesion browser: <code>{html.escape(browse_command(result.config))}</code></p>
<h3>Lesions per decided label (top 25 of {len(counts)})</h3>
{_table(counts[:25], ["name", "lesions"], ["label", "lesions"])}
<h3>Most frequent label pairs (top 15 of {len(pairs)})</h3>
{_table(pairs[:15], ["nameA", "nameB", "lesions"], ["label", "label", "lesions"])}

<h2>Table 2 — per label (complete truth)</h2>
{_table(label_rows, label_cols)}

<h2>Reproduce</h2>
<p>Each step is one command; run them in order from the project root.</p>
<pre>{html.escape(commands)}</pre>
{_table(steps_rows, ["step", "seconds", "command"])}
</body></html>
"""
    path = out / "report.html"
    write_text_atomic(path, doc)
    return path
