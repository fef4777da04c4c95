"""`lesanet ablate --seeds`: bootstrap intervals, verdict rules, the generated page, resuming."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vision.experiments import reproduction
from vision.metrics.stats import bootstrap_mean, mean_std, paired_differences

TINY_CONFIG = """\
name: tiny
model: {widths: [4, 8, 8, 16, 16], roi_fc: 16, embed_dim: 16}
loss: {rhem_samples: 300, triplet_count: 200}
train: {epochs: 1, lr_step_epoch: 1, batch_size: 16}
"""


# --------------------------------------------------------------------------- statistics


def test_bootstrap_interval_finds_a_known_difference_over_labels_and_seeds() -> None:
    rng = np.random.default_rng(1)
    # three seeds whose labels differ by +0.05 on average, each seed offset a little
    groups = [0.05 + offset + rng.normal(0, 0.08, size=120) for offset in (-0.01, 0.0, 0.01)]
    interval = bootstrap_mean(groups)
    assert interval.low < 0.05 < interval.high
    assert interval.low > 0 and interval.excludes_zero()
    assert interval.n_seeds == 3 and interval.n_units == 360
    noise = bootstrap_mean([rng.normal(0, 0.08, size=120) for _ in range(3)])
    assert noise.low < 0 < noise.high and not noise.excludes_zero()


def test_bootstrap_over_seeds_widens_the_interval_when_seeds_disagree() -> None:
    rng = np.random.default_rng(2)
    units = [rng.normal(0, 0.02, size=100) for _ in range(3)]
    agreeing = bootstrap_mean([u + 0.05 for u in units])
    disagreeing = bootstrap_mean([u + shift for u, shift in zip(units, (-0.10, 0.05, 0.20))])
    assert (disagreeing.high - disagreeing.low) > 3 * (agreeing.high - agreeing.low)
    assert disagreeing.low < 0 < disagreeing.high  # one seed the other way round: not significant


def test_one_seed_bootstrap_matches_scipy() -> None:
    from scipy.stats import bootstrap

    values = np.random.default_rng(3).normal(0.02, 0.1, size=80)
    ours = bootstrap_mean([values], resamples=8000)
    theirs = bootstrap((values,), np.mean, n_resamples=8000, method="percentile", random_state=0).confidence_interval
    assert ours.mean == pytest.approx(values.mean())
    assert ours.low == pytest.approx(theirs.low, abs=0.006) and ours.high == pytest.approx(theirs.high, abs=0.006)


def test_paired_differences_keep_units_both_sides_measured() -> None:
    diff = paired_differences([0.9, None, 0.5, float("nan")], [0.7, 0.8, 0.6, 0.1])
    assert diff.tolist() == pytest.approx([0.2, -0.1])
    assert mean_std([0.1, 0.3]) == pytest.approx((0.2, 0.1414213562))
    assert mean_std([0.4]) == (0.4, 0.0)
    with pytest.raises(ValueError):
        paired_differences([1.0], [1.0, 2.0])


# --------------------------------------------------------------------------- verdicts


def _interval(mean: float, low: float, high: float, n: int = 50) -> dict:
    return {"mean": mean, "low": low, "high": high, "n_units": n}


def test_verdict_rules() -> None:
    improves = reproduction.verdict_improves
    assert improves(_interval(0.03, 0.01, 0.05))[0] == "reproduced"
    assert improves(_interval(0.03, -0.01, 0.05)) == ("not reproduced", "within noise: the 95% interval includes zero")
    assert "opposite" in improves(_interval(-0.03, -0.05, -0.01))[1]
    assert improves(_interval(float("nan"), float("nan"), float("nan"), 0))[0] == "not measurable here"
    no_loss = reproduction.verdict_no_loss
    assert no_loss(_interval(0.01, -0.02, 0.04))[0] == "reproduced"
    assert no_loss(_interval(-0.01, -0.03, 0.01))[0] == "not reproduced"
    assert no_loss(_interval(-0.04, -0.06, -0.02))[1].startswith("a loss: the whole")
    exact, about = reproduction.ONTOLOGY_CLAIMS[0], reproduction.ONTOLOGY_CLAIMS[-1]
    assert reproduction.verdict_count(171, exact)[0] == "reproduced"
    assert reproduction.verdict_count(170, exact)[0] == "not reproduced"
    assert reproduction.verdict_count(4480, about)[0] == "reproduced"  # "about 4,461", within 1 %
    assert reproduction.verdict_count(4706, about) == ("not reproduced", "differs by +245 (+5.5%)")


# --------------------------------------------------------------------------- the page from seed records


LABELS = [f"label {i}" for i in range(40)]


def _seed_record(seed: int, margin: float, rng: np.random.Generator) -> dict:
    """A seed.json where LesaNet beats every other variant by ``margin`` on every metric, per label."""
    base = {name: rng.uniform(0.3, 0.7, size=len(METRIC_KEYS)) for name in LABELS}
    ablation = {}
    for variant in reproduction.VARIANTS:
        shift = 0.0 if variant.name == "LesaNet" else -margin
        sets = {}
        for truth in ("text-mined", "complete"):
            labels = {
                name: {m: float(v + shift + rng.normal(0, 0.01)) for m, v in zip(METRIC_KEYS, values)}
                for name, values in base.items()
            }
            averages = {m: float(np.mean([labels[n][m] for n in LABELS])) for m in METRIC_KEYS}
            sets[truth] = {"name": truth, "averages": averages, "n_labels": len(LABELS), "labels": labels}
        ablation[variant.name] = sets
    frequent = LABELS[:10]
    label_f1 = {"> 100": {n: 0.6 for n in frequent}, "> 0": {n: 0.6 + margin for n in LABELS}}
    queries = rng.uniform(0.2, 0.6, size=30)
    return {
        "format": reproduction.SEED_FORMAT,
        "seed": seed,
        "settings": {"config": "synthetic", "epochs": 8, "label_subsets": [100, 0]},
        "ablation": ablation,
        "variants": {v.name: list(v.overrides) for v in reproduction.VARIANTS},
        "subsets": {
            "subsets": {"> 100": frequent, "> 0": LABELS},
            "f1": {"> 100": {"> 100": 0.6}, "> 0": {"> 100": 0.6 + margin, "> 0": 0.4}},
            "label_f1": label_f1,
        },
        "retrieval": {
            "LesaNet": {"embedding": (queries + margin).tolist(), "score vector": queries.tolist()},
            "w/o triplet loss": {"embedding": queries.tolist(), "score vector": queries.tolist()},
        },
    }


METRIC_KEYS = reproduction.METRICS
COMMANDS = reproduction.Commands(ablate="lesanet ablate --config c.yaml --seeds 3 -o OUT", data=["lesanet synth ..."])
ONTOLOGY = {
    "labels": 171,
    "body-part labels": 115,
    "type labels": 27,
    "attribute labels": 29,
    "parent-child pairs among the labels (transitively reduced)": 137,
    "mutually exclusive label pairs after inheritance": 4706,
}


def _verdict_lines(doc: str) -> list[str]:
    return [line for line in doc.splitlines() if line.startswith("| ") and "**" in line]


@pytest.mark.parametrize("margin, expected", [(0.05, "reproduced"), (-0.05, "not reproduced")])
def test_page_verdicts_follow_the_measured_differences(margin: float, expected: str) -> None:
    rng = np.random.default_rng(4)
    records = [_seed_record(seed, margin, rng) for seed in range(3)]
    summary = reproduction.summarise(records)
    diff = summary["differences"]["w/o RHEM"]["complete"]["precision"]
    assert diff["mean"] == pytest.approx(margin, abs=0.005) and diff["n_seeds"] == 3
    assert len(diff["per_seed"]) == 3
    doc = reproduction.reproduction_markdown(summary, ONTOLOGY, COMMANDS, figure="x.png", requested_seeds=5)
    verdicts = _verdict_lines(doc)
    # 6 ablation claims, the subset claim, the retrieval claim: all on the measured side
    assert len(verdicts) == 8 + len(reproduction.ONTOLOGY_CLAIMS)
    for line in verdicts[:8]:
        assert f"**{expected}**" in line, line
    assert "**not reproduced** (differs by +245 (+5.5%))" in verdicts[-1]
    assert "**Seeds covered: 3** (0, 1, 2) of the 5 requested" in doc
    assert "not comparable" in doc and COMMANDS.ablate in doc and "![" in doc


def test_page_without_subsets_says_not_measurable() -> None:
    record = _seed_record(0, 0.05, np.random.default_rng(5))
    del record["subsets"]
    doc = reproduction.reproduction_markdown(reproduction.summarise([record]), ONTOLOGY, COMMANDS)
    assert "| not run | **not measurable here** (run with --label-subsets) |" in doc
    with pytest.raises(reproduction.AblationError):
        reproduction.summarise([])


# --------------------------------------------------------------------------- the command, tiny, end to end


def test_seeds_command_runs_resumes_and_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    out, doc = tmp_path / "out", tmp_path / "docs" / "reproduction.md"
    argv = [
        "ablate",
        "--config",
        str(config),
        "--seeds",
        "1",
        "--lesions",
        "50",
        "--label-subsets",
        "8,0",
        "--workers",
        "1",
        "--threads",
        "1",
        "--quiet",
        "-o",
        str(out),
        "--doc",
        str(doc),
    ]
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    seed = out / "seed-0"
    record = json.loads((seed / "seed.json").read_text())
    assert set(record["ablation"]) == {v.name for v in reproduction.VARIANTS}
    assert set(record["ablation"]["LesaNet"]) == {"text-mined", "complete"}
    assert record["subsets"]["label_f1"] and len(record["retrieval"]["LesaNet"]["embedding"]) > 0
    text = doc.read_text()
    assert "**Seeds covered: 1** (0)" in text and (doc.parent / "reproduction_label_subsets.png").is_file()
    assert "lesanet synth -o" in text and "--seed S" in text

    checkpoints = sorted(seed.glob("**/checkpoint.safetensors"))
    assert len(checkpoints) == len(reproduction.VARIANTS) + 2  # + the two label-subset models
    stamps = {p: p.stat().st_mtime_ns for p in checkpoints}
    verbose = [a for a in argv if a != "--quiet"]
    capsys.readouterr()
    assert main(verbose) == 0  # a finished seed is skipped whole
    assert "seed 0: finished earlier" in capsys.readouterr().err
    (seed / "seed.json").unlink()  # a seed cut short after training: evaluated again, nothing retrained
    assert main(verbose) == 0
    assert "exists, reused" in capsys.readouterr().err and (seed / "seed.json").is_file()
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == stamps

    summary_only = [
        "ablate",
        "--config",
        str(config),
        "--seeds",
        "3",
        "--lesions",
        "50",
        "--label-subsets",
        "8,0",
        "-o",
        str(out),
        "--doc",
        str(doc),
        "--summary-only",
    ]
    assert main(summary_only) == 0
    assert "**Seeds covered: 1** (0) of the 3 requested" in doc.read_text()
    assert not (out / "seed-1").exists()

    capsys.readouterr()
    assert main(["ablate", "--config", str(config), "--seeds", "1", "--data", str(seed / "cache"), "-o", str(out)]) == 1
    assert "leave out --data" in capsys.readouterr().err


def test_demo_plan_adds_the_ablation_only_when_asked(tmp_path: Path) -> None:
    import demo

    keys = [s.key for s in demo.plan(demo.DemoConfig(out_dir=tmp_path))]
    assert "ablate" not in keys
    with_ablation = [s.key for s in demo.plan(demo.DemoConfig(out_dir=tmp_path, ablate=True))]
    assert with_ablation.index("ablate") == with_ablation.index("eval-truth") + 1
    assert [s.key for s in demo.data_steps(demo.DemoConfig(out_dir=tmp_path))] == list(demo.DATA_STEPS)
    assert demo._ablation_html(tmp_path) == ""
    (tmp_path / "ablation").mkdir()
    (tmp_path / "ablation" / "table1.json").write_text(
        json.dumps(
            {
                "table1": [
                    {"method": "LesaNet", "test (text-mined) AUC": 0.9},
                    {"method": "baseline", "test (text-mined) AUC": 0.8},
                ]
            }
        )
    )
    html = demo._ablation_html(tmp_path)
    assert "LesaNet" in html and "0.900" in html and "reproduction" in html
