"""`lesanet` command line: one entry point for every job of the toolkit.

Each command group lives in its own ``_add_<group>`` function and imports its room
(``ontology``, ``textmine``, ``vision``, ``kg``) lazily, so ``lesanet --help`` is fast.
Exit codes: 0 success, 1 a clear error (one line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kg.formats import OUTPUT_FORMATS
from ontology.errors import LesanetError
from ontology.files import write_text_atomic

if TYPE_CHECKING:
    from kg.backend import SparqlBackend
    from ontology.protocol import OntologyLike

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CommandError(LesanetError):
    """A user-facing failure: printed as one line, exit code 1."""


# --------------------------------------------------------------------------- helpers


def _batch_exit(
    prog: str, bad: Any, succeeded: int, what: str, hint: str = "", words: tuple[str, str] = ("failed", "done")
) -> int:
    """Report a batch's bad records and apply the one exit rule (ontology.batch.EXIT_RULE).

    ``bad`` is an ontology.batch.BadRecords; its kept messages are printed, the rest counted."""
    from ontology.batch import batch_exit_code

    for line in bad.lines():
        print(f"{prog}: {line}", file=sys.stderr)
    code = batch_exit_code(succeeded, bad.total)
    if bad.total and not succeeded:
        raise CommandError(f"nothing usable: all {bad.total:,} {what} {words[0]} (see above)")
    if bad.total:
        print(
            f"{prog}: {bad.total:,} of {succeeded + bad.total:,} {what} {words[0]}{hint}; the other {succeeded:,} "
            f"{words[1]} (exit {code})",
            file=sys.stderr,
        )
    return code


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    """The one quiet flag of every command that shows progress (--no-progress is the same flag)."""
    parser.add_argument(
        "--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bar or per-step lines"
    )


@contextlib.contextmanager
def _quiet_logs(quiet: bool) -> Iterator[None]:
    """With --quiet, the rooms' progress lines (logging INFO) are held back; notes still show."""
    from ontology.logs import ROOMS

    loggers = [logging.getLogger(room) for room in ROOMS]
    saved = [logger.level for logger in loggers]
    if quiet:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, saved):
            logger.setLevel(level)


def _add_max_messages(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-messages",
        type=int,
        default=20,
        metavar="N",
        help="bad-record messages shown before the rest are only counted (default 20)",
    )


def _emit(text: str, output: str | None) -> None:
    """Print to stdout, or write atomically to ``output`` when given (``-`` = stdout)."""
    if output is None or output == "-":
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        write_text_atomic(output, text if text.endswith("\n") else text + "\n")


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _add_ontology_option(parser: argparse.ArgumentParser, gated: bool = True) -> None:
    """--ontology and --mappings; ``gated`` commands also get --unchecked (see _load_ontology)."""
    parser.add_argument(
        "--ontology",
        metavar="PATH",
        default=None,
        help="ontology file (RDF/XML, Turtle or OWL/XML); default: the shipped ontology/lesion.owl",
    )
    if gated:
        parser.add_argument(
            "--unchecked",
            action="store_true",
            help="use an ontology that `lesanet ontology check` rejects (dangling references, unsatisfiable "
            "classes); refused by default",
        )
    parser.add_argument(
        "--mappings",
        metavar="SSSOM",
        action="append",
        default=[],
        help="SSSOM TSV file of mappings to standard codes (skos:exactMatch/closeMatch) to attach (repeatable)",
    )


def _load_ontology(args: argparse.Namespace, strict: bool = True):  # -> ontology.Ontology
    from ontology import load_ontology

    onto = load_ontology(getattr(args, "ontology", None), strict=strict, mappings=getattr(args, "mappings", []))
    if getattr(args, "unchecked", None) is False:
        # the networkx checks of `ontology check` (milliseconds); HermiT stays in `ontology check` alone
        problems = onto.check(reasoner=False).problems
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise CommandError(
                f"{onto.source} fails `lesanet ontology check`: {problems[0]}{more}; fix the "
                "ontology, or pass --unchecked to use it anyway"
            )
    return onto


# --------------------------------------------------------------------------- ontology


def _add_ontology(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("ontology", help="the OWL lesion ontology: import, stats, check, reasoning")
    gsub = group.add_subparsers(dest="ontology_command", metavar="COMMAND", required=True)

    p = gsub.add_parser("import-xlsx", help="build the OWL ontology from the LesaNet spreadsheet")
    p.add_argument("xlsx", help="lesion_ontology_181022.xlsx")
    p.add_argument(
        "--labels",
        metavar="JSON",
        default=None,
        help="text_mined_labels_171_and_split.json (gives the 171-label set and its order); "
        "default: next to the spreadsheet",
    )
    p.add_argument("-o", "--output", required=True, help="output OWL (RDF/XML)")
    p.add_argument("--report", metavar="FILE", help="also write the defect report (Markdown) here")
    p.set_defaults(func=_cmd_ontology_import)

    p = gsub.add_parser("stats", help="counts: terms, labels, categories, pairs, unsatisfiable")
    _add_ontology_option(p, gated=False)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_ontology_stats)

    p = gsub.add_parser("check", help="cycles, dangling references, unsatisfiable classes (networkx + HermiT)")
    _add_ontology_option(p, gated=False)
    p.add_argument("--no-reasoner", action="store_true", help="skip the HermiT cross-check (no Java)")
    p.set_defaults(func=_cmd_ontology_check)

    p = gsub.add_parser("expand", help="a label set with its ancestors and inferred composites")
    _add_ontology_option(p)
    p.add_argument("names", nargs="+", metavar="NAME", help="label name, synonym or IRI")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_ontology_expand)

    p = gsub.add_parser("exclusive", help="labels mutually exclusive with NAME (inherited)")
    _add_ontology_option(p)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--label-set", default=None, help="restrict to a label set, e.g. lesanet171")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_ontology_exclusive)

    p = gsub.add_parser("export", help="write the ontology as OWL (RDF/XML), Turtle or JSON")
    _add_ontology_option(p, gated=False)
    p.add_argument("--format", choices=["owl", "ttl", "json"], default="owl")
    p.add_argument("-o", "--output", default=None, help="output file (default stdout)")
    p.set_defaults(func=_cmd_ontology_export)

    p = gsub.add_parser(
        "report", help="quality checks at ERROR / WARN / INFO levels (like ROBOT report); exit 1 on ERROR"
    )
    _add_ontology_option(p, gated=False)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument(
        "--fail-on",
        choices=["ERROR", "WARN", "none"],
        default="ERROR",
        help="exit 1 when a problem at this level or worse is found (default ERROR)",
    )
    p.add_argument("-o", "--output", default=None, help="output file (default stdout)")
    p.set_defaults(func=_cmd_ontology_report)

    p = gsub.add_parser("diff", help="what an edit changed: terms, and its effect on a label JSON, a cache, a run")
    p.add_argument("old", metavar="OLD", help="ontology before the edit")
    p.add_argument("new", metavar="NEW", help="ontology after the edit")
    p.add_argument(
        "--labels", metavar="JSON", help="label/split JSON: labels changing meaning, training targets changing"
    )
    p.add_argument(
        "--cache", metavar="DIR", action="append", default=[], help="patch cache to test for staleness (repeatable)"
    )
    p.add_argument(
        "--run", metavar="DIR", action="append", default=[], help="run directory to test for staleness (repeatable)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_ontology_diff)


def _cmd_ontology_import(args: argparse.Namespace) -> int:
    from ontology.xlsx_import import import_xlsx

    labels = args.labels
    if labels is None:
        guess = Path(args.xlsx).with_name("text_mined_labels_171_and_split.json")
        labels = str(guess) if guess.exists() else None
    result = import_xlsx(args.xlsx, labels)
    write_text_atomic(args.output, result.owl_xml)
    if args.report:
        write_text_atomic(args.report, result.report_markdown())
    for line in result.defect_lines():
        print(line, file=sys.stderr)
    print(f"wrote {args.output}: {result.summary()}", file=sys.stderr)
    return EXIT_OK


def _cmd_ontology_stats(args: argparse.Namespace) -> int:
    onto = _load_ontology(args)
    stats = onto.stats()
    if args.json:
        _print_json(stats)
    else:
        for key, value in stats.items():
            if isinstance(value, list):
                value = ", ".join(value) if value else "none"
            print(f"{key:>20}: {value}")
    return EXIT_OK


def _cmd_ontology_check(args: argparse.Namespace) -> int:
    onto = _load_ontology(args, strict=False)  # report a cycle instead of failing on it
    report = onto.check(reasoner=not args.no_reasoner)
    for line in report.lines():
        print(line)
    return EXIT_OK if report.ok else EXIT_ERROR


def _cmd_ontology_expand(args: argparse.Namespace) -> int:
    onto = _load_ontology(args)
    names = [onto.term(n).name for n in args.names]
    expanded = onto.sort_specific_first(onto.expand(names))
    if args.json:
        _print_json(expanded)
    else:
        print("\n".join(expanded))
    return EXIT_OK


def _cmd_ontology_exclusive(args: argparse.Namespace) -> int:
    onto = _load_ontology(args)
    name = onto.term(args.name).name
    exclusive = onto.exclusive(name)
    if args.label_set:
        allowed = set(onto.label_set(args.label_set))
        exclusive = {e for e in exclusive if e in allowed}
    ordered = sorted(exclusive, key=str.lower)
    if args.json:
        _print_json(ordered)
    else:
        print("\n".join(ordered))
    return EXIT_OK


def _cmd_ontology_export(args: argparse.Namespace) -> int:
    onto = _load_ontology(args)
    _emit(onto.serialize(args.format), args.output)
    return EXIT_OK


def _cmd_ontology_report(args: argparse.Namespace) -> int:
    from ontology.model import SHIPPED_OWL, _read_rdf
    from ontology.quality import quality_report

    def attach_mappings(onto) -> None:
        for mapping in args.mappings:
            onto.attach_mappings(mapping)

    path = Path(args.ontology) if args.ontology else SHIPPED_OWL
    report = quality_report(_read_rdf(path), str(path), attach=attach_mappings)
    if args.format == "json":
        text = json.dumps(report.as_dict(), indent=2, ensure_ascii=False)
    else:
        text = report.table()
    _emit(text, args.output)
    return EXIT_ERROR if report.failed(args.fail_on) else EXIT_OK


def _cmd_ontology_diff(args: argparse.Namespace) -> int:
    from ontology import load_ontology
    from ontology.diff import diff_ontologies, label_effect, staleness

    old, new = load_ontology(args.old), load_ontology(args.new)
    result = diff_ontologies(old, new)
    if args.labels:
        result.downstream = label_effect(old, new, args.labels)
    result.staleness = [staleness("cache", d, old, new) for d in args.cache]
    result.staleness += [staleness("run", d, old, new) for d in args.run]
    if args.json:
        _print_json(result.as_dict())
    else:
        print("\n".join(result.lines()))
    return EXIT_OK


def _warn_ontology_version(what: str, recorded: str, onto) -> None:
    """One warning naming both versions when a run or cache was made with another ontology."""
    if recorded != onto.version:
        _warn_line(
            f"{what} was made with ontology {recorded}, but {onto.source} is {onto.version}; "
            "`lesanet ontology diff` shows what changed"
        )


# --------------------------------------------------------------------------- train / model (LesaNet)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train LesaNet on a patch cache (CPU, one GPU, or torchrun for DDP)")
    p.add_argument("--config", required=True, metavar="YAML", help="e.g. configs/paper.yaml or configs/cpu-small.yaml")
    p.add_argument("--data", required=True, metavar="CACHE", help="patch cache directory (patches.npy + index.json)")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run directory to write")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last finished epoch")
    p.add_argument(
        "--epochs", type=int, default=None, metavar="N", help="train N epochs, the schedule shortened proportionally"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="overrides",
        help="override a config value, e.g. --set loss.rhem=false (repeatable; for ablations)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    _add_quiet(p)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for torch (default: all cores; 1 is faster when other jobs share the cores)",
    )
    p.add_argument(
        "--no-calibrate",
        action="store_true",
        help="skip the final step: per-label thresholds calibrated on the val split "
        "(RUN/thresholds.json, as `evaluate --calibrate`), which predict then uses",
    )
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    if "torch" not in sys.modules:
        # OpenMP threads that spin while waiting make CPU training several times slower when
        # other jobs share the cores (measured 4x, docs/benchmarks.md); sleeping costs ~nothing
        # when idle. Read once when torch loads, so only possible before the import.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from vision.config import apply_overrides, load_config
    from vision.engines.train import train

    config = apply_overrides(load_config(args.config), args.overrides)
    if args.threads is not None:
        if args.threads < 1:
            raise CommandError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    onto = _load_ontology(args)
    if args.resume and (Path(args.output) / "run.json").is_file():
        from vision.engines.checkpoint import read_run_info

        _warn_ontology_version(args.output, read_run_info(args.output).ontology_version, onto)
    run_dir = train(
        config,
        args.data,
        args.output,
        epochs=args.epochs,
        resume=args.resume,
        device=args.device,
        progress=not args.quiet,
        onto=onto,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        from vision.engines.checkpoint import last_epoch_line

        print(f"wrote {run_dir}: {last_epoch_line(run_dir)}", file=sys.stderr)
        if not args.no_calibrate:
            _calibrate_after_training(run_dir, args)
    return EXIT_OK


def _calibrate_after_training(run_dir: str | Path, args: argparse.Namespace) -> None:
    """Thresholds on val, so that a fresh run predicts with calibrated decisions."""
    from vision.engines.infer import load_predictor
    from vision.evaluation import evaluate

    predictor = load_predictor(run_dir, device=args.device, onto=_load_ontology(args), use_thresholds=False)
    try:
        doc = evaluate.calibrate_thresholds(predictor, args.data)
    except evaluate.EvaluationError as exc:
        print(f"lesanet: note: thresholds not calibrated ({exc}); predict decides at 0.5", file=sys.stderr)
        return
    print(
        f"calibrated {len(doc['labels'])} thresholds on val ({doc['n_lesions']} lesions) -> "
        f"{Path(run_dir) / evaluate.THRESHOLDS_FILE}",
        file=sys.stderr,
    )


def _add_model(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("model", help="the LesaNet network: layer table and parameter count")
    gsub = group.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    p = gsub.add_parser("summary", help="layer table (output shapes, parameters) and the total")
    p.add_argument("--config", required=True, metavar="YAML")
    p.add_argument("--labels", type=int, default=171, metavar="C", help="number of labels (default 171)")
    p.set_defaults(func=_cmd_model_summary)


def _cmd_model_summary(args: argparse.Namespace) -> int:
    from vision.config import load_config
    from vision.networks.model import model_summary

    if args.labels < 1:
        raise CommandError(f"--labels must be >= 1, got {args.labels}")
    config = load_config(args.config)
    print(f"config {config.name} ({args.config})")
    print(model_summary(config.model, args.labels))
    return EXIT_OK


# --------------------------------------------------------------------------- kg (RDF, SPARQL store, endpoint)


def _add_kg_backend_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", metavar="DIR", help="embedded pyoxigraph store directory")
    where.add_argument(
        "--endpoint", metavar="URL", help="remote SPARQL 1.1 query URL (Oxigraph, Fuseki, GraphDB, Virtuoso…)"
    )
    parser.add_argument(
        "--update-url",
        metavar="URL",
        default=None,
        help="SPARQL 1.1 update URL of the endpoint (default: its /query or /sparql replaced by /update)",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        default=None,
        help="file holding the bearer token sent with updates (kg serve --token-file)",
    )


# option, kg.guard.QueryLimits field, type, metavar, help (given the default)
_KG_LIMITS: tuple[tuple[str, str, type, str, Callable[[Any], str]], ...] = (
    ("--timeout", "timeout_s", float, "S", lambda d: f"seconds one query may run (default {d:g})"),
    ("--max-rows", "max_rows", int, "N", lambda d: f"result rows, or triples of CONSTRUCT/DESCRIBE (default {d:,})"),
    ("--max-bytes", "max_bytes", int, "N", lambda d: f"serialised result size in bytes (default {d:,})"),
    (
        "--max-memory",
        "max_memory_mib",
        int,
        "MIB",
        lambda d: f"memory of the query's worker process in MiB (default {d})",
    ),
    ("--max-query-chars", "max_chars", int, "N", lambda d: f"length of the query text (default {d:,})"),
    ("--max-depth", "max_depth", int, "N", lambda d: f"nesting of {{ }} ( ) [ ] in the query (default {d})"),
)


def _add_kg_limit_options(parser: argparse.ArgumentParser, server: bool) -> None:
    """Limits on user SPARQL (kg.guard.QueryLimits); the defaults are stated in --help."""
    from kg.guard import DEFAULT_LIMITS

    group = parser.add_argument_group("query limits (a query past one is stopped and the reply names the limit)")
    for option, field, kind, metavar, text in _KG_LIMITS:
        default = getattr(DEFAULT_LIMITS, field)
        group.add_argument(option, type=kind, default=default, metavar=metavar, help=text(default))
    group.add_argument(
        "--allow-service",
        action="store_true",
        help="run SERVICE clauses (and LOAD in updates), which fetch remote data; default: refused",
    )
    if server:
        group.add_argument(
            "--workers",
            type=int,
            default=2,
            metavar="N",
            help="query worker processes, i.e. queries run at once (default 2; 1 with --token-file)",
        )
        group.add_argument(
            "--max-connections",
            type=int,
            default=32,
            metavar="N",
            help="connections served at once; more get HTTP 503 (default 32)",
        )


def _kg_limits(args: argparse.Namespace):  # -> kg.guard.QueryLimits
    from kg.guard import QueryLimits

    given = {field: getattr(args, option[2:].replace("-", "_")) for option, field, *_ in _KG_LIMITS}
    return QueryLimits(**given, allow_service=args.allow_service)


def _read_token(path: str | None) -> str | None:
    if path is None:
        return None
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise CommandError(f"{path}: the token file is empty")
    return token


def _kg_backend(args: argparse.Namespace, read_only: bool) -> SparqlBackend:
    if args.endpoint:
        from kg.endpoint import SparqlEndpoint

        return SparqlEndpoint(args.endpoint, args.update_url, _read_token(args.token_file))
    from kg.store import LesionStore

    return LesionStore(args.store, read_only=read_only)


def _add_kg(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("kg", help="predictions as RDF, the SPARQL store, canned queries, endpoint")
    gsub = group.add_subparsers(dest="kg_command", metavar="COMMAND", required=True)

    p = gsub.add_parser("rdf", help="convert prediction records (JSON/JSONL) to Turtle, N-Triples or JSON-LD")
    p.add_argument("records", metavar="PREDICTIONS", help="prediction records (docs/architecture.md)")
    p.add_argument("-o", "--output", required=True, help="output file (.ttl, .nt or .jsonld)")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default=None, help="default: from the suffix")
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_kg_rdf)

    p = gsub.add_parser(
        "load",
        help="load RDF files or JSON prediction / mined-sentence records into a store",
        epilog="Each bad record (or RDF file with a syntax error, loaded all or nothing) is reported as "
        "FILE: line N: reason and skipped; the rest is loaded. Exit 0 when everything loaded, "
        "1 when nothing did, 3 when some records were skipped (with a summary line).",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help=".ttl .nt .nq .trig .jsonld .owl, or .json/.jsonl records")
    p.add_argument(
        "--max-messages",
        type=int,
        default=20,
        metavar="N",
        help="bad-record messages shown before the rest are only counted (default 20)",
    )
    _add_kg_backend_options(p)
    p.add_argument(
        "--graph", metavar="IRI", default=None, help="named graph for triples (default: the predictions graph)"
    )
    p.add_argument(
        "--dataset",
        default="deeplesion",
        help="dataset prefix of lesion ids made from mined sentences' lesion_idx (default deeplesion)",
    )
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_kg_load)

    p = gsub.add_parser("query", help="run SPARQL (text or -f FILE) over the store or an endpoint")
    p.add_argument("query", nargs="?", default=None, help="SPARQL query text")
    p.add_argument("-f", "--file", metavar="FILE", default=None, help="read the query from FILE")
    _add_kg_backend_options(p)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("-o", "--output", default=None, help="write the result here (default stdout)")
    _add_kg_limit_options(p, server=False)
    p.set_defaults(func=_cmd_kg_query)

    p = gsub.add_parser("find", help='canned queries with bound parameters (e.g. --label "lung nodule")')
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--label", metavar="NAME", help="lesions with this label or any subclass")
    what.add_argument("--lesion", metavar="ID", help="all scored labels of a lesion (e.g. deeplesion/12)")
    what.add_argument("--similar", metavar="ID", help="a lesion's stored nearest neighbours")
    what.add_argument("--cooccurring", metavar="NAME", help="labels decided together with this label")
    what.add_argument("--training", metavar="ID", help="a lesion's text-mined training labels and sentences")
    what.add_argument("--violations", action="store_true", help="lesions whose labels break an exclusion")
    what.add_argument("--counts", action="store_true", help="lesions per decided label")
    what.add_argument("--pairs", action="store_true", help="co-occurrence counts of all label pairs")
    what.add_argument("--list", action="store_true", help="list the canned queries and their .rq files")
    _add_kg_backend_options(p)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("-o", "--output", default=None, help="write the result here (default stdout)")
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_kg_find)

    p = gsub.add_parser("validate", help="SHACL-check RDF files against kg/shapes.ttl (pyshacl)")
    p.add_argument("files", nargs="+", metavar="FILE", help=".ttl, .nt or .jsonld")
    p.add_argument(
        "--with-ontology",
        action="store_true",
        help="also check every annotation body is a class of the ontology (--ontology)",
    )
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_kg_validate)

    p = gsub.add_parser(
        "serve", help="SPARQL endpoint and lesion browser over a store on 127.0.0.1 (read-only unless a token is set)"
    )
    p.add_argument("--store", required=True, metavar="DIR")
    p.add_argument("--port", type=int, default=7879, help="TCP port (0 = any free port; default 7879)")
    p.add_argument(
        "--token-file",
        metavar="FILE",
        default=None,
        help="accept SPARQL updates bearing this token (Authorization: Bearer); default: refuse updates",
    )
    browser = p.add_argument_group("lesion browser (pages at http://127.0.0.1:PORT/)")
    browser.add_argument("--cache", metavar="CACHE", default=None, help="patch cache folder: the lesions' patches")
    browser.add_argument(
        "--images",
        metavar="DIR",
        default=None,
        help="folder holding the source slices (Images_png/) for lesions not in the cache",
    )
    browser.add_argument("--run", metavar="RUN", default=None, help="training run: calibrated thresholds per label")
    browser.add_argument(
        "--evaluation",
        metavar="JSON",
        default=None,
        help="`lesanet evaluate --format json` output: AUC / F1 / threshold per label",
    )
    browser.add_argument("--no-browser", action="store_true", help="serve the SPARQL endpoint alone")
    browser.add_argument("--open", action="store_true", help="open the browser page in this machine's web browser")
    _add_ontology_option(p)
    _add_kg_limit_options(p, server=True)
    p.set_defaults(func=_cmd_kg_serve)

    p = gsub.add_parser(
        "export",
        help="stored lesions as a DICOM SR (TID 1500) or an HL7 FHIR Bundle",
        epilog="The record is rebuilt from the store (labels, scores, thresholds, model, ontology "
        "version, source and DICOM UIDs); SR also reads the key slice's header from the "
        "source series (the path the store recorded, or --dicom DIR). "
        "See docs/clinical-outputs.md.",
    )
    p.add_argument("--format", choices=["sr", "fhir"], required=True)
    p.add_argument(
        "--lesion",
        metavar="ID",
        action="append",
        required=True,
        help="lesion id (e.g. dicom/series/33/0); repeat for several lesions of one study",
    )
    p.add_argument("-o", "--output", required=True, help="the .dcm (sr) or .json (fhir) file to write")
    p.add_argument(
        "--dicom",
        metavar="DIR",
        default=None,
        help="the source DICOM series when it moved since prediction (default: the stored path)",
    )
    p.add_argument(
        "--checkpoint",
        metavar="SHA",
        default=None,
        help="with lesions predicted by several models: the checkpoint SHA-256 (or a prefix) to export",
    )
    _add_kg_backend_options(p)
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_kg_export)


def _cmd_kg_rdf(args: argparse.Namespace) -> int:
    from kg.rdf_io import write_rdf
    from kg.records import read_json_records

    errors: list[str] = []
    count = write_rdf(read_json_records(args.records), args.output, args.format, _load_ontology(args), errors)
    for line in errors:
        print(f"{args.records}: skipped {line}", file=sys.stderr)
    print(f"wrote {args.output}: {count} triples", file=sys.stderr)
    return EXIT_ERROR if errors else EXIT_OK


def _cmd_kg_load(args: argparse.Namespace) -> int:
    from ontology.batch import BadRecords

    onto = _load_ontology(args)
    errors = BadRecords(keep=max(args.max_messages, 0))
    backend = _kg_backend(args, read_only=False)  # the embedded store or an endpoint: one load path
    if not backend.has_ontology():
        print(f"{args.store or args.endpoint}: loading ontology {onto.version}", file=sys.stderr)
        backend.load_ontology(onto)
    loaded = backend.load_files(args.files, args.graph, onto, errors, args.dataset)
    backend.optimize()
    for line in errors:
        print(f"skipped {line}", file=sys.stderr)
    if errors.hidden:
        print(f"skipped {errors.hidden:,} more bad records (not shown; --max-messages)", file=sys.stderr)
    for path, count in loaded.items():
        print(f"loaded {path}: {count} triples", file=sys.stderr)
    if not errors.total:
        return EXIT_OK
    if not any(loaded.values()):
        raise CommandError(f"nothing loaded: {errors.total:,} bad records or files (see above)")
    print(
        f"kg load: {errors.total:,} skipped (bad records, or RDF files that do not parse); the rest is loaded "
        f"(exit {EXIT_SOME_FAILED})",
        file=sys.stderr,
    )
    return EXIT_SOME_FAILED


def _cmd_kg_query(args: argparse.Namespace) -> int:
    if (args.query is None) == (args.file is None):
        raise CommandError("give the query text or -f FILE (one of them)")
    text = args.query if args.file is None else Path(args.file).read_text(encoding="utf-8")
    limits = _kg_limits(args)
    if args.endpoint:  # the server applies its own limits; here: the checks and the time limit
        from kg.endpoint import SparqlEndpoint
        from kg.guard import check_sparql

        check_sparql(text, limits)
        endpoint = SparqlEndpoint(
            args.endpoint, args.update_url, _read_token(args.token_file), timeout=limits.timeout_s
        )
        result = endpoint.query(text)
    else:  # in a worker process: an engine crash or a runaway query is a clear error
        from kg.pool import query_store

        result = query_store(args.store, text, limits)
    _emit(result.render(args.format), args.output)
    return EXIT_OK


_KG_FIND = {  # option -> (canned query, parameter name or None)
    "label": ("lesions-with-label", "label"),
    "lesion": ("labels-of-lesion", "lesion"),
    "similar": ("similar-lesions", "lesion"),
    "cooccurring": ("cooccurring-labels", "label"),
    "training": ("training-labels-of-lesion", "lesion"),
    "violations": ("exclusion-violations", None),
    "counts": ("label-counts", None),
    "pairs": ("label-cooccurrence", None),
}


def _cmd_kg_find(args: argparse.Namespace) -> int:
    from kg.canned import CANNED, run_canned

    if args.list:
        for query in CANNED.values():
            params = " ".join(f"<{p.name}>" for p in query.params)
            print(f"{query.name:<26} {params:<9} {query.description}  [{query.path}]")
        return EXIT_OK
    for option, (name, param) in _KG_FIND.items():
        value = getattr(args, option)
        if value:
            bound = {param: value} if param else {}
            onto = _load_ontology(args) if param == "label" else None
            result = run_canned(_kg_backend(args, read_only=True), name, onto, **bound)
            _emit(result.render(args.format), args.output)
            return EXIT_OK
    raise CommandError("nothing to find")  # argparse requires one option


def _cmd_kg_validate(args: argparse.Namespace) -> int:
    import rdflib

    from kg.validate import validate_file

    ontology = None
    if args.with_ontology:
        ontology = rdflib.Graph().parse(data=_load_ontology(args).serialize("ttl"), format="turtle")
    ok = True
    for path in args.files:
        report, triples = validate_file(path, ontology)
        ok &= report.conforms
        if report.conforms:
            print(f"{path}: conforms to kg/shapes.ttl ({triples} triples)")
        else:
            print(report.text.rstrip())
            print(f"{path}: {report.violations} SHACL violations", file=sys.stderr)
    return EXIT_OK if ok else EXIT_ERROR


def _cmd_kg_export(args: argparse.Namespace) -> int:
    from kg.export import stored_record

    onto = _load_ontology(args)
    backend = _kg_backend(args, read_only=True)
    records = [stored_record(backend, lesion, onto, args.checkpoint) for lesion in args.lesion]
    if args.format == "sr":
        _write_clinical(records, onto, args.output, None, dicom=args.dicom)
    else:  # patient / study headers when the source is still there (or --dicom); FHIR needs none
        _write_clinical(records, onto, None, args.output, dicom=args.dicom, required=bool(args.dicom))
    return EXIT_OK


def _cmd_kg_serve(args: argparse.Namespace) -> int:
    from kg.server import ServerConfig, serve

    config = ServerConfig(limits=_kg_limits(args), workers=args.workers, max_connections=args.max_connections)
    pages = None if args.no_browser else _lesion_browser(args).routes()
    on_ready: Callable[[str], None] | None = None
    if args.open:
        import webbrowser

        def open_in_browser(url: str) -> None:  # the stdlib's way to the user's browser
            webbrowser.open(url)

        on_ready = open_in_browser

    serve(args.store, args.port, _read_token(args.token_file), config=config, pages=pages, on_ready=on_ready)
    return EXIT_OK


def _lesion_browser(args: argparse.Namespace):  # -> kg.web.LesionBrowser
    """The browser's pages, with the text miner handed in for free-text search (kg does
    not import textmine). The miner loads in the background (spaCy: seconds), so the
    server answers at once; the first description search waits for it."""
    from concurrent.futures import ThreadPoolExecutor

    from kg.web import BrowserConfig, Description, LesionBrowser, PatchSource, load_evaluation

    onto = _load_ontology(args)

    def build_miner():
        from textmine.pipeline import LabelMiner

        return LabelMiner(onto)

    miner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="miner").submit(build_miner)

    def describe(text: str) -> Description:
        mined = miner.result().mine([text])[0]
        if mined.error:
            raise ValueError(f"the description could not be mined: {mined.error}")
        return Description(
            tuple(mined.relevant),
            tuple(mined.uncertain),
            tuple(mined.irrelevant),
            tuple((m.text, m.label, m.relation) for m in mined.mentions),
        )

    patches = PatchSource(args.cache, args.images)
    return LesionBrowser(BrowserConfig(onto, patches, load_evaluation(args.run, args.evaluation), describe))


# --------------------------------------------------------------------------- evaluate / ablate / predict / embed / retrieve


_VOLUME_FLAGS = ("image", "nifti", "dicom")
_INPUT_FLAGS = ("deeplesion", "png", *_VOLUME_FLAGS)


def _add_image_inputs(p: argparse.ArgumentParser) -> None:
    """The lesion-input flags shared by predict and retrieve."""
    g = p.add_argument_group("lesion input (one of)")
    g.add_argument(
        "--image",
        metavar="PATH",
        help="CT volume in HU: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), "
        "a DICOM file or a DICOM series folder",
    )
    g.add_argument("--nifti", metavar="FILE", help="same as --image (kept for scripts)")
    g.add_argument("--dicom", metavar="DIR", help="same as --image (kept for scripts)")
    g.add_argument("--series", metavar="UID", help="SeriesInstanceUID when the DICOM folder holds several series")
    g.add_argument("--deeplesion", metavar="DIR", help="DeepLesion-format folder (DL_info.csv + Images_png/)")
    g.add_argument("--lesion", type=int, nargs="+", metavar="IDX", help="DL_info.csv row(s), with --deeplesion")
    g.add_argument("--png", metavar="FILE", help="DeepLesion 16-bit PNG slice (neighbours NNN.png beside it are used)")
    g.add_argument("--spacing", metavar="MM", help="with --png: pixel spacing MM, X,Y or X,Y,Z (Z = slice interval)")
    g = p.add_argument_group(
        "where the lesion is on --image (one of)",
        "File voxel indices are the file's own, as numpy / nibabel / ITK-SNAP / 3D Slicer\n"
        "show them (a DICOM folder: ITK's series order, by position along the slice normal).\n"
        "World coordinates are mm in DICOM's patient frame (LPS), or RAS with --ras.",
    )
    g.add_argument("--slice", type=int, metavar="K", help="key slice: index along the file's third axis (0-based)")
    g.add_argument(
        "--box",
        metavar="X1,Y1,X2,Y2",
        help="with --slice: lesion box, X along the file's first axis, Y along its second (0-based)",
    )
    g.add_argument("--boxes", metavar="FILE", help="one lesion a line: slice, x1, y1, x2, y2 (file voxel indices)")
    g.add_argument(
        "--world-box",
        nargs="+",
        metavar="MM",
        help="two opposite box corners in mm: X1 Y1 Z1 X2 Y2 Z2 (or --world-box=X1,Y1,Z1,X2,Y2,Z2)",
    )
    g.add_argument("--world-point", nargs="+", metavar="MM", help="lesion centre in mm: X Y Z, with --size")
    g.add_argument("--size", type=float, metavar="MM", help="with --world-point: the lesion's long diameter in mm")
    g.add_argument("--ras", action="store_true", help="world coordinates are RAS (nibabel, NIfTI) instead of LPS")
    g.add_argument(
        "--mask",
        metavar="PATH",
        help="mask / label image on the image's grid: each connected component (or label value) "
        "is one lesion, on its largest axial cross-section",
    )
    g.add_argument("--mask-label", type=int, metavar="N", help="with --mask: only voxels of label N")
    g.add_argument(
        "--mask-by",
        choices=["component", "label"],
        default="component",
        help="with --mask: one lesion per connected component (default) or per label value",
    )
    g.add_argument(
        "--force",
        action="store_true",
        help="accept a DICOM Modality other than CT and values that do not look like HU (e.g. a crop without air)",
    )


def _volume_path(args: argparse.Namespace) -> str:
    given = [getattr(args, name) for name in _VOLUME_FLAGS if getattr(args, name, None)]
    if not given:
        raise CommandError("give the CT volume: --image PATH (or --nifti / --dicom)")
    return given[0]


def _volume_locations(args: argparse.Namespace, errors: list[str] | None = None) -> list:
    """The lesion locations given on the command line for a CT volume (vision.data.locate);
    with ``errors``, bad lines of a --boxes file are reported there and the rest kept."""
    from vision.data import inputs, locate

    frame = "RAS" if args.ras else "LPS"
    forms = [
        name
        for name, on in (
            ("--slice/--box", args.box or args.slice is not None),
            ("--boxes", args.boxes),
            ("--world-box", args.world_box),
            ("--world-point", args.world_point),
            ("--mask", args.mask),
        )
        if on
    ]
    if len(forms) != 1:
        raise CommandError(
            "say where the lesion is with one of --slice K --box X1,Y1,X2,Y2, --boxes FILE, "
            f"--world-box, --world-point (with --size) or --mask (got {', '.join(forms) or 'none'})"
        )
    if args.boxes:
        return [locate.VoxelBox(k, box, f"{args.boxes}:{line}") for line, k, box in _boxes(args.boxes, errors)]
    if args.world_box:
        return [locate.parse_world_box(" ".join(args.world_box), frame)]
    if args.world_point:
        return [locate.parse_world_point(" ".join(args.world_point), args.size, frame)]
    if args.mask:
        return [locate.MaskLesions(args.mask, args.mask_label, args.mask_by)]
    if args.box is None or args.slice is None:
        raise CommandError("--slice K and --box X1,Y1,X2,Y2 go together (file voxel indices)")
    return [locate.VoxelBox(args.slice, inputs.parse_box(args.box))]


def _check_single_input(args: argparse.Namespace, also: Sequence[str] = ()) -> str:
    given = [name for name in (*_INPUT_FLAGS, *also) if getattr(args, name, None)]
    if len(given) != 1:
        raise CommandError(
            "give exactly one input: --image PATH (or --nifti / --dicom), --deeplesion DIR "
            f"--lesion IDX, --png FILE{', --manifest CSV' if 'manifest' in also else ''}"
            f"{' (got ' + ', '.join('--' + g for g in given) + ')' if given else ''}"
        )
    return given[0]


def _boxes(path: str, errors: list[str] | None) -> list:
    """(line, slice, box) of a --boxes file; bad lines go to ``errors``, or raise when it is None."""
    from vision.data import inputs

    boxes, bad = inputs.read_boxes(path)
    if bad and errors is None:
        raise CommandError(bad[0])
    if errors is not None:
        errors.extend(bad)
    return boxes


def _lesion_inputs(args: argparse.Namespace, errors: list[str] | None = None) -> list:
    """LesionInputs of the command line's one image input (no model needed: errors come first).

    With ``errors`` (predict), a lesion that cannot be placed — a bad --boxes line, a box
    outside the image, a --lesion that is not a row — is reported there and left out."""
    from vision.data import inputs

    source = _check_single_input(args)
    if source == "deeplesion":
        if not args.lesion:
            raise CommandError("--deeplesion needs --lesion IDX (a DL_info.csv row)")
        return inputs.deeplesion_inputs(args.deeplesion, args.lesion, getattr(args, "dataset", "deeplesion"), errors)
    if source == "png":
        if not args.spacing:
            raise CommandError("--png needs --spacing MM (pixel spacing; X,Y,Z with the slice interval)")
        if args.boxes and (args.box or args.slice is not None):
            raise CommandError("give either --boxes FILE or --box X1,Y1,X2,Y2, not both")
        if args.boxes:
            boxes = [box for _, _, box in _boxes(args.boxes, errors)]
        elif args.box:
            boxes = [inputs.parse_box(args.box)]
        else:
            raise CommandError("--png needs --box X1,Y1,X2,Y2 (or --boxes FILE)")
        return inputs.png_inputs(args.png, args.spacing, boxes, errors)
    from vision.data import locate

    return locate.image_inputs(
        _volume_path(args),
        _volume_locations(args, errors),
        series=args.series,
        force=args.force,
        warn=_warn_line,
        errors=errors,
    )


def _warn_line(message: str) -> None:
    print(f"lesanet: warning: {message}", file=sys.stderr)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="the paper's tables for a trained run: Table 1, Table 2, breakdowns")
    p.add_argument("run", metavar="RUN", help="training run directory")
    p.add_argument("--data", required=True, metavar="CACHE", help="patch cache the run was trained on")
    p.add_argument(
        "--split",
        choices=["val", "test", "hand", "all"],
        default="all",
        help="val / test: text-mined labels; hand: complete truth (cache truth or --truth); "
        "all (default): test and hand",
    )
    p.add_argument(
        "--truth", metavar="FILE", help="hand-labeled truth JSON [{lesion_idx, expanded_terms}] (the hand set)"
    )
    p.add_argument(
        "--decision",
        choices=["calibrated", "fixed", "top-k"],
        default="calibrated",
        help="calibrated per-label thresholds (default), fixed 0.5, or the top-K labels per lesion",
    )
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="K for --decision top-k")
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="(re)calibrate thresholds on val first (done automatically when RUN has none)",
    )
    p.add_argument(
        "--exclusive-filter",
        action="store_true",
        help="also report averages after exclusive-label filtering (off in the paper)",
    )
    p.add_argument("--format", choices=["md", "csv", "json"], default="md")
    p.add_argument("--sort", default="f1", help="Table 2 order: f1, auc, train_positives, label, ... (default f1)")
    p.add_argument("--top", type=int, default=None, metavar="N", help="only the first N rows of Table 2 (Markdown)")
    p.add_argument("--figures", metavar="DIR", help="also write ROC curves and the SPL heatmap here")
    p.add_argument("-o", "--output", default=None, help="output file (default stdout)")
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from vision.engines.infer import load_predictor
    from vision.evaluation import evaluate

    if args.decision == "top-k" and not args.top_k:
        raise CommandError("--decision top-k needs --top-k K")
    predictor = load_predictor(args.run, onto=_load_ontology(args), use_thresholds=not args.calibrate)
    _warn_ontology_version(args.run, predictor.info.ontology_version, predictor.onto)
    if args.calibrate or (args.decision == "calibrated" and not predictor.calibrated):
        doc = evaluate.calibrate_thresholds(predictor, args.data)
        print(
            f"calibrated {len(doc['labels'])} thresholds on val ({doc['n_lesions']} lesions) -> "
            f"{Path(args.run) / evaluate.THRESHOLDS_FILE}",
            file=sys.stderr,
        )

    def skipped(split: str, exc: Exception) -> None:
        print(f"lesanet: note: {split} set skipped: {exc}", file=sys.stderr)

    results = evaluate.evaluate_splits(
        predictor,
        args.data,
        args.split,
        args.truth,
        skipped,
        decision=args.decision,
        top_k=args.top_k,
        exclusive_filter=args.exclusive_filter,
    )
    for result in results:
        if result.unknown_labels:
            print(
                f"lesanet: warning: {result.name}: truth labels not in the ontology ignored: "
                f"{', '.join(result.unknown_labels)}",
                file=sys.stderr,
            )
    text = evaluate.results_report(results, predictor.info.config.name, args.format, args.sort, args.top)
    _emit(text, args.output)
    if args.figures:
        from vision.reporting.figures import run_figures

        for path in run_figures(predictor, args.data, args.figures):
            print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="train the baseline, LesaNet and each 'without X' variant; combined Table 1")
    p.add_argument("--config", required=True, metavar="YAML", help="the full model's config")
    p.add_argument(
        "--data", default=None, metavar="CACHE", help="the patch cache (not with --seeds, which builds its own)"
    )
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="one run per variant + table1.md/csv/json")
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help="the paper's conclusions over seeds 0..N-1: for each, a new phantom (built like the demo's) and "
        "training seed, every variant, --label-subsets if given, retrieval; then mean ± std and "
        "bootstrap intervals in DIR/summary.json and the --doc page. Finished seeds are skipped",
    )
    p.add_argument("--lesions", type=int, default=1500, metavar="N", help="with --seeds: phantom size (default 1500)")
    p.add_argument("--workers", type=int, default=2, help="with --seeds: worker processes for synth and cache")
    p.add_argument(
        "--doc",
        default=None,
        metavar="MD",
        help="with --seeds: write the reproduction page here (e.g. docs/reproduction.md) and its plot beside it",
    )
    p.add_argument(
        "--summary-only",
        action="store_true",
        help="with --seeds: train nothing; summarise the seeds finished so far and write --doc",
    )
    p.add_argument("--epochs", type=int, default=None, metavar="N", help="shorten every variant's schedule")
    p.add_argument(
        "--variants", nargs="+", default=None, metavar="NAME", help="subset of variants (default all; see --list)"
    )
    p.add_argument(
        "--label-subsets",
        default=None,
        metavar="N,N,...",
        help="instead: the label-subset experiment (paper Fig. 5), e.g. 1000,500,100,0 "
        "(train on labels with more than N training positives)",
    )
    p.add_argument("--list", action="store_true", help="print the variants and their config changes, then exit")
    p.add_argument("--resume", action="store_true", help="keep finished variants, continue unfinished ones")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for torch (1 is faster when other jobs share the cores)",
    )
    _add_quiet(p)
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_ablate)


def _cmd_ablate(args: argparse.Namespace) -> int:
    from vision.config import load_config
    from vision.experiments import ablate

    if args.list:
        for variant in ablate.VARIANTS:
            print(f"{variant.name:<28} {' '.join(variant.overrides) or '(config as given)'}")
        return EXIT_OK
    config = load_config(args.config)
    onto = _load_ontology(args)
    if args.threads:
        import torch

        torch.set_num_threads(max(1, args.threads))
    minimums: list[int] = []
    if args.label_subsets:
        try:
            minimums = [int(v) for v in args.label_subsets.split(",")]
        except ValueError:
            raise CommandError(
                f"--label-subsets {args.label_subsets!r}: expected integers like 1000,500,100,0"
            ) from None
    if args.seeds is not None:
        return _ablate_seeds(args, config, onto, minimums)
    if args.data is None:
        raise CommandError("ablate needs --data CACHE (or --seeds N, which builds a phantom cache per seed)")
    if args.label_subsets:
        outcome = ablate.run_label_subsets(
            config,
            args.data,
            args.output,
            minimums,
            epochs=args.epochs,
            onto=onto,
            progress=not args.quiet,
            resume=args.resume,
        )
    else:
        outcome = ablate.run_ablation(
            config,
            args.data,
            args.output,
            variants=args.variants,
            epochs=args.epochs,
            onto=onto,
            progress=not args.quiet,
            resume=args.resume,
        )
    sys.stdout.write(outcome.markdown)
    for path in outcome.files:
        print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


EXIT_SOME_FAILED = 3  # predict --manifest: some rows failed, the others were predicted

_PREDICT_EPILOG = """\
examples:
  lesanet predict RUN --image ct.nii.gz --slice 33 --box 210,190,260,241
  lesanet predict RUN --image dicom/ --world-box -60 -20 -140 -35 5 -140
  lesanet predict RUN --image ct.nrrd --world-point 12.5 -40 -128 --size 22
  lesanet predict RUN --image ct.nii.gz --mask lesions.nii.gz --json
  lesanet predict RUN --manifest lesions.csv --jsonl -o predictions.jsonl

--slice / --box are the file's own voxel indices (K along its third axis, X along the
first, Y along the second), as numpy, nibabel, ITK-SNAP and 3D Slicer show them; every
record's source gives back slice, box_px (same indices), center_mm (LPS) and, for DICOM,
the key slice's sop_instance_uid. The manifest is a CSV with a header: image, and per row
one of slice+box, world_box, world_point+size_mm, mask (see docs/data.md).

exit codes: 0 every lesion predicted; 1 a clear error, or no lesion / manifest row succeeded;
2 bad usage; 3 some lesions (of several --lesion, a --boxes file, a mask) or manifest rows
failed (each reported on stderr with its line or row), the others predicted and written."""


def _ablate_seeds(args: argparse.Namespace, config, onto, minimums: list[int]) -> int:
    """`ablate --seeds N`: per seed a demo-built phantom cache, the ablation, subsets, retrieval; the summary."""
    import shlex

    import demo
    from vision.experiments import reproduction

    if args.seeds < 1:
        raise CommandError("--seeds must be at least 1")
    if args.data is not None:
        raise CommandError("--seeds builds a phantom cache per seed; leave out --data")
    if args.lesions < 50:
        raise CommandError("--lesions must be at least 50 (train, validation and test need lesions)")
    out = Path(args.output)

    def seed_data(seed: int) -> demo.DemoConfig:
        return demo.DemoConfig(
            out_dir=reproduction.seed_dir(out, seed), lesions=args.lesions, seed=seed, workers=args.workers
        )

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr)

    seeds = list(range(args.seeds))
    if not args.summary_only:
        reproduction.run_seeds(
            config,
            seeds,
            out,
            lambda seed, _: demo.prepare_data(seed_data(seed), main, log),
            epochs=args.epochs,
            label_subsets=minimums,
            onto=onto,
            progress=not args.quiet,
            log=log,
        )
    command = "lesanet ablate " + " ".join(shlex.quote(a) for a in _ablate_argv(args))
    template = demo.DemoConfig(out_dir=out / "seed-S", lesions=args.lesions, seed=0, workers=args.workers)
    data = [step.command().replace("--seed 0", "--seed S") for step in demo.data_steps(template)]
    commands = reproduction.Commands(ablate=command, data=data)
    if args.doc:
        summary, written = reproduction.write_reproduction(out, args.doc, onto, commands, requested_seeds=args.seeds)
    else:
        from ontology.files import write_json_atomic

        summary = reproduction.summarise(reproduction.load_seed_records(out))
        written = [out / "summary.json"]
        write_json_atomic(written[0], summary)
    print(f"{len(summary['seeds'])} finished seed(s) of {args.seeds}: {', '.join(map(str, summary['seeds']))}")
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


def _ablate_argv(args: argparse.Namespace) -> list[str]:
    """The `ablate --seeds` options that decide the figures (not --threads, --quiet, --summary-only)."""
    argv = ["--config", str(args.config), "--seeds", str(args.seeds), "-o", str(args.output)]
    if args.lesions != 1500:
        argv += ["--lesions", str(args.lesions)]
    if args.epochs is not None:
        argv += ["--epochs", str(args.epochs)]
    if args.label_subsets:
        argv += ["--label-subsets", args.label_subsets]
    if args.doc:
        argv += ["--doc", str(args.doc)]
    return argv


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="label lesions on CT: every label with score and decision, most specific first",
        epilog=_PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="training run directory (thresholds.json used when calibrated)")
    _add_image_inputs(p)
    p.add_argument(
        "--manifest",
        metavar="CSV",
        help="or: many lesions over many volumes, one a row (one model load; bad rows reported, the rest predicted)",
    )
    p.add_argument("--data", metavar="CACHE", help="or: predict every lesion of a patch cache split")
    p.add_argument("--split", default="test", help="with --data: train, val, test (default), hand or all")
    p.add_argument(
        "--dataset",
        default="deeplesion",
        metavar="NAME",
        help="with --data / --deeplesion: the dataset name in each record's source (e.g. phantom)",
    )
    p.add_argument("--json", action="store_true", help="JSON prediction records (one object for one lesion)")
    p.add_argument("--jsonl", action="store_true", help="one JSON record a line")
    p.add_argument(
        "--top",
        type=int,
        default=10,
        metavar="N",
        help="table: at most N labels per lesion, decided first (default 10; JSON / RDF keep all)",
    )
    p.add_argument(
        "--exclusive-filter",
        action="store_true",
        help="of two decided exclusive labels keep the higher-scoring (off by default, as in the paper)",
    )
    p.add_argument("--embeddings", metavar="EMB", help="add the nearest lesions of this embeddings file (neighbors)")
    p.add_argument("-k", type=int, default=5, help="neighbours per lesion with --embeddings (default 5)")
    p.add_argument("--patch-png", metavar="FILE", help="save the patch(es) with box and labels as a PNG panel")
    p.add_argument(
        "--rdf",
        metavar="FILE",
        help="also write the predictions as RDF (Web Annotation + PROV-O): .ttl, .nt or .jsonld",
    )
    p.add_argument(
        "--sr",
        metavar="OUT",
        help="also write a DICOM SR (TID 1500 measurement report) for a DICOM input; with --manifest "
        "OUT is a folder receiving one STUDY_UID.dcm per study (docs/clinical-outputs.md)",
    )
    p.add_argument("--fhir", metavar="FILE", help="also write an HL7 FHIR R4 Bundle (R4B models) as JSON")
    p.add_argument("--device", default=None)
    p.add_argument("-o", "--output", default=None, help="write here instead of stdout")
    _add_max_messages(p)
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_predict)


def _check_sr_sources(sources: Sequence[dict]) -> None:
    from kg.dicom_source import dicom_source

    for i, source in enumerate(sources):
        dicom_source({"source": source}, f"lesion {i + 1}" if len(sources) > 1 else "--sr")


def _write_clinical(
    records: Sequence[dict],
    onto: OntologyLike,
    sr: str | None,
    fhir: str | None,
    per_study: bool = False,
    dicom: str | None = None,
    required: bool = True,
) -> None:
    """--sr / --fhir (predict, kg export): kg.dicom_sr and kg.fhir read the key slices' headers."""
    if sr:
        from kg.dicom_sr import write_sr_outputs

        written, skipped = write_sr_outputs(records, sr, onto, per_study=per_study, folder=dicom)
        for line in skipped:
            print(f"lesanet: note: no SR for {line}", file=sys.stderr)
        for path, count in written:
            print(f"wrote {path}: DICOM SR, {count} measurement group(s)", file=sys.stderr)
    if fhir:
        from kg.dicom_source import dicom_headers
        from kg.fhir import write_fhir

        count = write_fhir(records, fhir, onto, dicom_headers(records, dicom, required=required))
        print(f"wrote {fhir}: FHIR Bundle, {count} Observation(s)", file=sys.stderr)


def _print_row_errors(errors: Sequence[Any], keep: int) -> None:
    """Failed lesions / manifest rows (vision.data.manifest.RowError), the first ``keep`` shown."""
    from ontology.batch import BadRecords

    bad = BadRecords(keep)
    bad.extend(f"error: {error.message}" for error in errors)
    for line in bad.lines("failed lesions or rows"):
        print(f"lesanet: {line}", file=sys.stderr)


def _prepared_lesions(args: argparse.Namespace):  # -> vision.data.manifest.PreparedBatch | None
    """predict's lesions, preprocessed (no torch yet): a bad flag, file or box is reported
    before the model loads. None for --data (the cache is read by the predictor)."""
    if args.manifest and (args.data or any(getattr(args, n, None) for n in _INPUT_FLAGS)):
        raise CommandError("give either --manifest CSV or one image input / --data, not both")
    if args.data:
        if any(getattr(args, n, None) for n in _INPUT_FLAGS):
            raise CommandError("give either --data CACHE or one image input, not both")
        return None
    from vision.data import manifest

    if args.manifest:
        rows, errors = manifest.read_manifest(args.manifest)
        batch = manifest.prepare_manifest(args.manifest, rows, errors, force=args.force, warn=_warn_line)
    else:
        input_errors: list[str] = []
        batch = manifest.prepare_inputs(_lesion_inputs(args, input_errors), input_errors, warn=_warn_line)
        if batch.rows == 1 and batch.errors:
            raise CommandError(batch.errors[0].message)  # one lesion: its reason is the one line
    _print_row_errors(batch.errors, args.max_messages)
    if not batch.lesion_ids:
        if args.manifest:
            raise CommandError(f"{args.manifest}: none of its {batch.rows} rows could be predicted")
        raise CommandError(f"none of the {batch.rows} lesions could be predicted (see above)")
    return batch


def _cmd_predict(args: argparse.Namespace) -> int:
    batch = _prepared_lesions(args)
    if args.sr and not args.manifest:  # before the model loads: SR needs a DICOM source
        _check_sr_sources(batch.sources if batch is not None else [{"dataset": args.dataset}])
    from vision.engines import infer
    from vision.metrics.thresholds import thresholds_note

    predictor = infer.load_predictor(
        args.run, device=args.device, onto=_load_ontology(args), exclusive_filter=args.exclusive_filter
    )
    _warn_ontology_version(args.run, predictor.info.ontology_version, predictor.onto)
    print(
        f"lesanet: {'note' if predictor.calibrated else 'warning'}: {thresholds_note(args.run, predictor.calibrated)}",
        file=sys.stderr,
    )
    if batch is None:
        prediction = infer.predict_cache_full(predictor, args.data, args.split, dataset=args.dataset)
    else:
        prediction = infer.predict_patches(predictor, batch.lesion_ids, batch.sources, batch.patches, batch.boxes)
    records = prediction.records
    if args.embeddings:
        from vision.engines import retrieval

        emb = retrieval.load_embeddings(args.embeddings)
        retrieval.check_same_model(emb, predictor.info.checkpoint_sha256)
        retrieval.attach_neighbours(records, prediction.scored.embeddings, emb, args.k)
    if args.json:
        single = batch is not None and not args.manifest and batch.rows == 1  # lists for manifests and batches
        text = json.dumps(records[0] if single else records, indent=2, ensure_ascii=False)
    elif args.jsonl:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        from vision.reporting.records import records_table

        text = records_table(records, args.top)
    _emit(text, args.output)
    if args.rdf:
        from kg.rdf_io import write_rdf

        triples = write_rdf(records, args.rdf, onto=predictor.onto)
        print(f"wrote {args.rdf}: {triples} triples", file=sys.stderr)
    _write_clinical(records, predictor.onto, args.sr, args.fhir, per_study=bool(args.manifest))
    if args.patch_png:
        from vision.reporting.figures import panel_lesions, prediction_panels

        print(f"wrote {prediction_panels(panel_lesions(prediction), args.patch_png)}", file=sys.stderr)
    if batch is not None and batch.errors:
        what = "manifest rows" if args.manifest else "lesions"
        print(
            f"lesanet: {len(records)} lesions predicted; {len(batch.errors)} of {batch.rows} {what} failed "
            "(listed above)",
            file=sys.stderr,
        )
        return EXIT_SOME_FAILED
    return EXIT_OK


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed every lesion of a patch cache once (for retrieve)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--data", required=True, metavar="CACHE")
    p.add_argument("-o", "--output", required=True, metavar="EMB", help="embeddings directory to write")
    p.add_argument("--split", default="all", help="all (default), train, val or test")
    p.add_argument("--device", default=None)
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_embed)


def _cmd_embed(args: argparse.Namespace) -> int:
    from vision.engines import infer, retrieval

    predictor = infer.load_predictor(args.run, device=args.device, onto=_load_ontology(args))
    emb = retrieval.embed_cache(predictor, args.data, args.output, split=args.split)
    print(f"wrote {emb.path}: {len(emb.lesions)} lesions × {emb.vectors.shape[1]}-D", file=sys.stderr)
    return EXIT_OK


def _add_retrieve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrieve", help="similar lesions by embedding (L2), with their labels; or retrieval quality")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--embeddings", required=True, metavar="EMB", help="from `lesanet embed`")
    _add_image_inputs(p)
    p.add_argument("--query-idx", type=int, metavar="IDX", help="or: a lesion already in EMB, by lesion index")
    p.add_argument("-k", type=int, default=5, help="neighbours (default 5)")
    p.add_argument("--exclude-self", action="store_true", help="leave the query lesion itself out of the hits")
    p.add_argument("--backend", choices=["exact", "faiss", "auto"], default="exact")
    p.add_argument(
        "--quality",
        action="store_true",
        help="instead: precision@k of label-set similarity, test queries vs train+val, "
        "embedding against score-vector retrieval",
    )
    p.add_argument("--theta", type=float, default=1.0, help="with --quality: a hit is relevant when sim >= theta")
    p.add_argument("--json", action="store_true")
    p.add_argument("--panel", metavar="PNG", help="save the query and its neighbours as a picture (needs the cache)")
    p.add_argument("--device", default=None)
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_retrieve)


def _cmd_retrieve(args: argparse.Namespace) -> int:
    from vision.engines import infer, retrieval

    emb = retrieval.load_embeddings(args.embeddings)
    if args.quality:
        report = retrieval.retrieval_report(emb, k=args.k, theta=args.theta, backend=args.backend)
        if args.json:
            _print_json({name: q.as_dict() for name, q in report.items()})
        else:
            print(retrieval.quality_markdown(report))
        return EXIT_OK
    predictor = infer.load_predictor(args.run, device=args.device, onto=_load_ontology(args))
    retrieval.check_same_model(emb, predictor.info.checkpoint_sha256)
    if args.query_idx is not None:
        if any(getattr(args, n, None) for n in _INPUT_FLAGS):
            raise CommandError("give either --query-idx IDX or one image input, not both")
        row = emb.row_of(args.query_idx)
        query = retrieval.stored_query(emb, row)
    else:
        query = retrieval.image_query(predictor, _lesion_inputs(args)[0], emb, warn=_warn_line)
    exclude = [query.row] if args.exclude_self and query.row is not None else []
    hits = retrieval.neighbours(emb, query.vector, args.k, exclude_rows=exclude, backend=args.backend)
    result = retrieval.mark_shared(query, hits)
    if args.json:
        _print_json(result)
    else:
        print(retrieval.hits_table(result))
    if args.panel:
        from vision.reporting.figures import hits_panel

        print(f"wrote {hits_panel(result, query, emb, args.panel)}", file=sys.stderr)
    return EXIT_OK


def _add_evaluation(sub: argparse._SubParsersAction) -> None:
    """evaluate, ablate, predict, embed, retrieve (vision.evaluation.evaluate / ablate / infer / retrieval)."""
    for add in (_add_evaluate, _add_ablate, _add_predict, _add_embed, _add_retrieve):
        add(sub)


# --------------------------------------------------------------------------- data / synth (CT data: vision.data.deeplesion, vision.data.cache, vision.data.phantom)


_DATA_LIMITS = (
    "Rows are refused (by check and cache alike) when Patient_index is outside 0..999,999, Study_index or "
    "Series_ID outside 0..9,999, Key_slice_index or Slice_range outside 0..99,999, Image_size over 4096 "
    "a side, pixel spacing over 10 mm or slice interval over 50 mm, Patient_age outside 0..150, or the "
    "box centre outside the image; PNG slices over 4096 pixels a side are refused before decoding. "
    "Each bad row or record is reported and skipped; exit 0 when all were good, 3 when some were skipped, "
    "1 when nothing was usable."
)


def _add_data(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("data", help="DeepLesion-format data: check it, build the patch cache, draw patches")
    gsub = group.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    p = gsub.add_parser(
        "cache", help="preprocess every labelled lesion once into a memory-mappable patch cache", epilog=_DATA_LIMITS
    )
    p.add_argument("--deeplesion", required=True, metavar="DIR", help="folder with DL_info.csv and Images_png/")
    p.add_argument("--labels", required=True, metavar="JSON", help="label/split JSON (official format)")
    p.add_argument("-o", "--output", required=True, metavar="CACHE", help="cache folder (resumes an interrupted build)")
    p.add_argument(
        "--truth", metavar="JSON", help="complete label sets (hand-labeled format); default DIR/truth.json if present"
    )
    p.add_argument("--sentences", metavar="JSONL", help="sentence records; default DIR/sentences.jsonl if present")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2; 1 = in this process)")
    p.add_argument(
        "--coordinate-base",
        type=int,
        choices=[0, 1],
        default=0,
        help="pixel coordinates in DL_info.csv start at 0 (default) or 1",
    )
    _add_quiet(p)
    _add_max_messages(p)
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_data_cache)

    p = gsub.add_parser(
        "check", help="read DL_info.csv (and a label JSON): counts and every bad row", epilog=_DATA_LIMITS
    )
    p.add_argument("--deeplesion", required=True, metavar="DIR")
    p.add_argument("--labels", metavar="JSON", help="also check this label/split JSON against the ontology")
    p.add_argument("--coordinate-base", type=int, choices=[0, 1], default=0)
    _add_max_messages(p)
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_data_check)

    p = gsub.add_parser("show", help="draw cached patches with their boxes and labels as a PNG")
    p.add_argument("cache", metavar="CACHE")
    p.add_argument("-o", "--output", required=True, metavar="PNG")
    p.add_argument("-n", "--count", type=int, default=16, help="number of patches (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_data_show)


def _cmd_data_cache(args: argparse.Namespace) -> int:
    from vision.data.cache import build_cache

    onto = _load_ontology(args)
    report = build_cache(
        args.deeplesion,
        args.labels,
        args.output,
        workers=args.workers,
        truth_json=args.truth,
        sentences_jsonl=args.sentences,
        known_labels=set(onto.terms),
        ontology_version=onto.version,
        coordinate_base=args.coordinate_base,
        progress=not args.quiet,
    )
    from ontology.batch import BadRecords

    skipped = BadRecords(args.max_messages)
    for bad in report.bad:
        where = "" if bad["lesion_idx"] is None else f"lesion {bad['lesion_idx']}: "
        skipped.append(f"skipped {where}{bad['reason']}")
    print(
        f"cached {report.n_lesions} lesions ({len(report.bad)} bad, {len(report.warnings)} warnings, "
        f"{report.resumed_lesions} resumed) in {report.seconds:.1f} s, "
        f"{report.lesions_per_second:.0f} lesions/s -> {args.output} (every bad one in {args.output}/report.json)",
        file=sys.stderr,
    )
    return _batch_exit("lesanet", skipped, report.n_lesions, "lesions or records", words=("skipped", "cached"))


def _cmd_data_check(args: argparse.Namespace) -> int:
    from vision.data.deeplesion import read_dl_info, read_label_split

    info = read_dl_info(Path(args.deeplesion) / "DL_info.csv", strict=False, coordinate_base=args.coordinate_base)
    errors = [str(e) for e in info.errors]
    print(f"DL_info.csv: {len(info)} good rows, {len(info.errors)} bad")
    if args.labels:
        onto = _load_ontology(args)
        labels = read_label_split(args.labels, dl_info=info, known_labels=set(onto.terms), strict=False)
        splits = {s: sum(1 for l in labels.lesions if l.split == s) for s in ("train", "val", "test")}
        dropped = ", ".join(f"{k} {v}" for k, v in labels.dropped.items())
        print(
            f"labels: {len(labels.term_list)} terms; lesions train {splits['train']}, val {splits['val']}, "
            f"test {splits['test']}; dropped {dropped}; {len(labels.errors)} bad"
        )
        errors += [str(e) for e in labels.errors]
    from ontology.batch import BadRecords

    bad = BadRecords(args.max_messages)
    bad.extend(errors)
    return _batch_exit("lesanet", bad, len(info), "rows or records", words=("bad", "good"))


def _cmd_data_show(args: argparse.Namespace) -> int:
    from vision.data.phantom.figure import patch_panel

    print(f"wrote {patch_panel(args.cache, args.output, args.count, args.seed)}", file=sys.stderr)
    return EXIT_OK


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic CT phantom in DeepLesion's format (images, labels, sentences)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="dataset folder to create")
    p.add_argument("--lesions", type=int, default=1500, help="number of lesions (default 1500, the demo size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--image-size", type=int, choices=[256, 512], default=256)
    p.add_argument("--no-images", action="store_true", help="tables and sentences only (no Images_png/)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty folder")
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from vision.data.phantom import synthesize

    if args.lesions < 1:
        raise CommandError("--lesions must be at least 1")
    out = synthesize(
        args.output,
        args.lesions,
        args.seed,
        workers=args.workers,
        image_size=args.image_size,
        onto=_load_ontology(args),
        overwrite=args.overwrite,
        write_images=not args.no_images,
    )
    meta = json.loads((out / "phantom.json").read_text(encoding="utf-8"))
    print(
        f"wrote {out}: {meta['n_lesions']} lesions, {meta['n_patients']} patients, {meta['n_slices']} slices, "
        f"{len(meta['label_counts'])} labels",
        file=sys.stderr,
    )
    return EXIT_OK


# --------------------------------------------------------------------------- textmine (labels from report sentences)


def _add_textmine(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("textmine", help="mine labels and their relation to the bookmarked lesion from report text")
    gsub = group.add_subparsers(dest="textmine_command", metavar="COMMAND", required=True)

    def engine_options(p: argparse.ArgumentParser) -> None:
        _add_ontology_option(p)
        p.add_argument(
            "--engine",
            choices=["rules", "model"],
            default="rules",
            help="relation engine: ConText rules (default) or the trained CNN",
        )
        p.add_argument(
            "--model",
            metavar="FILE",
            default=None,
            help="relation model (.safetensors) for --engine model (from `textmine train-relations`)",
        )

    p = gsub.add_parser("run", help="mine JSONL sentences (id, text) into labels with relations")
    p.add_argument("input", metavar="IN.jsonl", help="one JSON object a line with `id` and `text` (- = stdin)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.jsonl", help="output JSONL (- = stdout)")
    p.add_argument("--expand", action="store_true", help="add ancestors and inferred composites to relevant/uncertain")
    _add_max_messages(p)
    engine_options(p)
    p.set_defaults(func=_cmd_textmine_run)

    p = gsub.add_parser("eval", help="score against hand-labeled JSON or relation JSONL gold")
    p.add_argument("gold", metavar="GOLD", help="hand_labeled_dev.json (text, expanded_terms) or relation JSONL")
    p.add_argument(
        "--label-set",
        default=None,
        metavar="NAME",
        help="score only these labels (e.g. lesanet171); default: every label in the ontology",
    )
    p.add_argument("--top", type=int, default=20, help="rows of the per-label table (0 = all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    engine_options(p)
    p.set_defaults(func=_cmd_textmine_eval)

    p = gsub.add_parser("cv", help="k-fold cross-validation on hand-labeled gold: held-out-fold F1 and error classes")
    p.add_argument("gold", metavar="GOLD", help="hand-labeled JSON (text, expanded_terms), e.g. hand_labeled_dev.json")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold shuffle (default 0)")
    p.add_argument("--label-set", default=None, metavar="NAME", help="score only these labels (e.g. lesanet171)")
    p.add_argument(
        "--examples",
        type=int,
        default=0,
        metavar="N",
        help="also print N wrong texts of the training folds of fold 1 (what rules are designed from)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    engine_options(p)
    p.set_defaults(func=_cmd_textmine_cv)

    p = gsub.add_parser("derivations", help="list the word forms the derivational layer generates from the ontology")
    p.add_argument("--grep", default=None, metavar="TEXT", help="only forms containing TEXT")
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_textmine_derivations)

    p = gsub.add_parser("train-relations", help="train the CNN relation classifier from annotated JSONL")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="TRAIN.jsonl",
        help="annotated sentences: text + mentions (start, end, relation), e.g. a phantom's sentences.jsonl",
    )
    p.add_argument("-o", "--output", required=True, metavar="MODEL.safetensors")
    p.add_argument(
        "--handwritten",
        action="store_true",
        help="also train on the shipped hand-annotated sentences (textmine/data/relations_handwritten.jsonl)",
    )
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument(
        "--heldout",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="hold out this fraction of sentences and report accuracy on them",
    )
    p.add_argument("--seed", type=int, default=0)
    _add_max_messages(p)
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_textmine_train)

    p = gsub.add_parser("build-split", help="mined sentences -> official text_mined_labels_171_and_split.json format")
    p.add_argument(
        "input", metavar="MINED.jsonl", help="output of `textmine run` (or sentences.jsonl); needs lesion_idx"
    )
    p.add_argument("-o", "--output", required=True, metavar="SPLIT.json")
    p.add_argument(
        "--reference",
        metavar="JSON",
        default=None,
        help="take each lesion's split from this official-format file (records' `split` key wins)",
    )
    p.add_argument(
        "--fractions",
        type=float,
        nargs=3,
        default=[0.86, 0.07, 0.07],
        metavar=("TRAIN", "VAL", "TEST"),
        help="random split fractions for lesions with no split (default 0.86 0.07 0.07)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-set", default="lesanet171", help="term_list of the output (default lesanet171)")
    _add_max_messages(p)
    _add_ontology_option(p)
    p.set_defaults(func=_cmd_textmine_build_split)


def _textmine_miner(args: argparse.Namespace):  # -> textmine.pipeline.LabelMiner
    from textmine.pipeline import LabelMiner

    if args.engine == "model" and not args.model:
        raise CommandError("--engine model needs --model FILE (train one with `lesanet textmine train-relations`)")
    return LabelMiner(_load_ontology(args), engine=args.engine, model_path=args.model)


def _cmd_textmine_run(args: argparse.Namespace) -> int:
    from textmine.jobs import run_file

    summary = run_file(
        _textmine_miner(args), args.input, args.output, expand=args.expand, max_messages=args.max_messages
    )
    return _batch_exit(
        "lesanet textmine", summary.messages, summary.succeeded, "records", " (see their `error` field in the output)"
    )


def _cmd_textmine_eval(args: argparse.Namespace) -> int:
    from textmine.evaluate import (
        detect_gold_format,
        hand_labeled_table,
        load_hand_labeled,
        relations_table,
        score_hand_labeled,
        score_relations,
    )

    miner = _textmine_miner(args)
    if detect_gold_format(args.gold) == "hand":
        labels = miner.onto.label_set(args.label_set) if args.label_set else None
        result = score_hand_labeled(miner, load_hand_labeled(args.gold), labels).as_dict()
        text = hand_labeled_table(result, args.label_set or "all", args.top)
    else:
        result = score_relations(miner, args.gold).as_dict()
        text = relations_table(result)
    if args.json:
        _print_json(result)
    else:
        sys.stdout.write(text)
    for message in result["errors"]:
        print(f"lesanet textmine: {message}", file=sys.stderr)
    return EXIT_ERROR if result["errors"] else EXIT_OK


def _cmd_textmine_cv(args: argparse.Namespace) -> int:
    from textmine.crossval import cross_validate
    from textmine.evaluate import load_hand_labeled

    miner = _textmine_miner(args)
    items = load_hand_labeled(args.gold)
    if not 2 <= args.folds <= len(items):
        raise CommandError(f"--folds must be between 2 and {len(items)} (the texts in {args.gold}), not {args.folds}")
    labels = miner.onto.label_set(args.label_set) if args.label_set else None
    cv = cross_validate(miner, items, args.folds, args.seed, labels)
    result = cv.as_dict()
    if args.json:
        _print_json(result)
        return EXIT_OK
    sys.stdout.write(cv.report(args.label_set or "all", args.seed, args.examples))
    return EXIT_OK


def _cmd_textmine_derivations(args: argparse.Namespace) -> int:
    from textmine.derive import derivations, name_composites
    from textmine.lexicon import known_phrases

    onto = _load_ontology(args)
    for d in derivations(onto, known_phrases(onto)):
        if args.grep is None or args.grep.lower() in d.phrase:
            print(f"{d.phrase}\t{', '.join(d.labels) or '-'}\t{d.rule}")
    for c in name_composites(onto):
        if args.grep is None or args.grep.lower() in c.term.lower():
            where = f"[{c.location}]" if c.location else repr(" ".join(c.modifier))
            print(f"{where} + [{c.head}]\t{c.term}\tname composite: the term's name is location + head, under the head")
    return EXIT_OK


def _cmd_textmine_train(args: argparse.Namespace) -> int:
    from importlib import resources

    from textmine.pipeline import LabelMiner
    from textmine.relcnn import RelationConfig
    from textmine.training import train_relations

    paths = list(args.inputs)
    if args.handwritten:
        paths.append(str(resources.files("textmine").joinpath("data", "relations_handwritten.jsonl")))
    for path in paths:
        if not Path(path).is_file():
            raise CommandError(f"{path}: no such training file (annotated JSONL)")
    config = RelationConfig(seed=args.seed)
    if args.epochs is not None:
        if args.epochs < 1:
            raise CommandError("--epochs must be at least 1")
        config.epochs = args.epochs
    if not 0.0 <= args.heldout < 1.0:
        raise CommandError("--heldout must be a fraction in [0, 1)")
    report = train_relations(LabelMiner(_load_ontology(args)), paths, config, args.heldout, args.max_messages)
    report.model.save(args.output)
    held = (
        ""
        if report.heldout_accuracy is None
        else f"; held-out accuracy {report.heldout_accuracy:.4f} on {report.n_heldout} mentions"
    )
    print(f"wrote {args.output}: {report.n_train} training mentions, {config.epochs} epochs{held}", file=sys.stderr)
    return _batch_exit("lesanet textmine", report.bad_records, report.records_used, "training lines")


def _cmd_textmine_build_split(args: argparse.Namespace) -> int:
    from textmine.split import build_split, collect_lesions, read_mined_jsonl, reference_splits

    if not Path(args.input).is_file():
        raise CommandError(f"{args.input}: no such file (mined sentences JSONL)")
    from ontology.batch import BadRecords

    onto = _load_ontology(args)
    records = list(read_mined_jsonl(args.input))
    lesions, bad = collect_lesions(records)
    if not lesions:
        raise CommandError(f"{args.input}: no usable record ({len(bad):,} bad{': ' + bad[0] if bad else ''})")
    reference = reference_splits(args.reference) if args.reference else None
    result = build_split(lesions, onto.label_set(args.label_set), reference, tuple(args.fractions), args.seed, bad)
    write_text_atomic(args.output, json.dumps(result.data) + "\n")
    print(f"wrote {args.output}: {result.summary()}", file=sys.stderr)
    messages = BadRecords(args.max_messages)
    messages.extend(f"{args.input}:{message}" for message in result.bad_records)
    return _batch_exit(
        "lesanet textmine", messages, len(records) - len(result.bad_records), "records", words=("skipped", "used")
    )


# --------------------------------------------------------------------------- demo


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole paper on a synthetic CT phantom: synth, mine, cache, train, evaluate, predict, RDF, SPARQL",
    )
    p.add_argument("-o", "--output", default="demo-out", metavar="DIR", help="output folder (default demo-out)")
    p.add_argument("--lesions", type=int, default=1500, help="phantom size (default 1500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=None, metavar="YAML", help="model config (default configs/cpu-small.yaml)")
    p.add_argument("--epochs", type=int, default=None, help="train N epochs (schedule shortened proportionally)")
    p.add_argument("--workers", type=int, default=2, help="worker processes for synth and cache (default 2)")
    p.add_argument(
        "--ablate",
        action="store_true",
        help="also the one-seed ablation table (trains 8 variants: several times longer; off by default)",
    )
    _add_quiet(p)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    import demo

    if args.lesions < 50:
        raise CommandError("--lesions must be at least 50 (train, validation and test need lesions)")
    cfg = demo.DemoConfig(
        out_dir=Path(args.output),
        lesions=args.lesions,
        seed=args.seed,
        model_config=Path(args.config) if args.config else demo.DEFAULT_CONFIG,
        epochs=args.epochs,
        workers=args.workers,
        ablate=args.ablate,
    )
    if args.quiet:
        result = demo.run_demo(cfg, main, log=lambda line: None)  # the summary below still shows
    else:
        result = demo.run_demo(cfg, main)
    checks = result.checks
    for line in result.summary_lines():
        print(line, file=sys.stderr)
    print(f"demo finished in {result.seconds / 60:.1f} min; report: {result.report}", file=sys.stderr)
    if not checks["counts_match"]:
        raise CommandError(f"SPARQL counts differ from the JSON predictions: {checks['mismatches']}")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def _package_version() -> str:
    """The installed distribution's version (pyproject.toml)."""
    from importlib import metadata

    try:
        return metadata.version("lesanet")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lesanet",
        description="Holistic lesion annotation on CT (LesaNet) with an OWL lesion ontology.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"lesanet {_package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMAND_GROUPS:
        add(sub)
    return parser


# One entry per command group; each group adds its own sub-parsers.
_COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_ontology,
    _add_train,
    _add_model,
    _add_kg,
    _add_evaluation,
    _add_data,
    _add_synth,
    _add_textmine,
    _add_demo,
]


# Options whose value may start with "-" (a negative coordinate): argparse would read
# "--box -5,10,20,30" as two options; joined as "--box=-5,10,20,30" the value reaches the
# parser, which refuses it with a clear message.
_SIGNED_VALUE_OPTIONS = ("--box",)
_SIGNED_NUMBERS = re.compile(r"-\.?[0-9][0-9.,eE+\- ]*")


def _join_signed_values(argv: list[str]) -> list[str]:
    joined: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _SIGNED_VALUE_OPTIONS and i + 1 < len(argv) and _SIGNED_NUMBERS.fullmatch(argv[i + 1]):
            joined.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        joined.append(argv[i])
        i += 1
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    argv = _join_signed_values(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on bad usage
    try:
        with _quiet_logs(getattr(args, "quiet", False)):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("lesanet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the one place errors become one line
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, (LesanetError, OSError)):  # a user error: bad input, a missing file, a refusal
            print(f"lesanet: error: {message}", file=sys.stderr)
        else:  # anything else is a bug in the toolkit, and is shown as one
            print(
                f"lesanet: internal error (a bug): {type(exc).__name__}: {message}; run with --debug for the traceback",
                file=sys.stderr,
            )
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
