"""Training end to end on a tiny phantom cache: loss falls, exact resume, DDP on gloo, bad input."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import cli
from vision.config import Config, apply_overrides, load_config
from vision.engines.checkpoint import CHECKPOINT_FILE, RUN_FILE, CheckpointError, load_run, read_run_info
from vision.engines.train import TrainError, TrainingData, fit, load_training_data, train

ROOT = Path(__file__).resolve().parents[1]
TERMS = ["chest", "abdomen", "lung", "liver", "mass", "cyst", "nodule"]


def write_phantom_cache(folder: Path, n: int, seed: int, terms: list[str] = TERMS) -> Path:
    """A patch cache in the documented format whose labels are visible in the pixels:
    side of the patch -> lung/liver, bright/dark disk -> mass/cyst, small -> nodule."""
    rng = np.random.default_rng(seed)
    patches = rng.integers(60, 100, size=(n, 3, 120, 120), dtype=np.uint8)
    yy, xx = np.mgrid[:120, :120]
    lesions = []
    for i in range(n):
        s = int(rng.integers(12, 30))
        x1, y1 = int(rng.integers(5, 115 - s)), int(rng.integers(5, 115 - s))
        bright, left = bool(rng.random() < 0.5), x1 + s / 2 < 60
        disk = (xx - x1 - s / 2) ** 2 + (yy - y1 - s / 2) ** 2 < (s / 2) ** 2
        patches[i][:, disk] = 200 if bright else 20
        relevant = ["liver" if left else "lung", "mass" if bright else "cyst"] + (["nodule"] if s < 18 else [])
        split = "train" if i < int(0.8 * n) else "val"
        lesions.append(
            {
                "row": i,
                "lesion_idx": i,
                "split": split,
                "box": [x1, y1, x1 + s, y1 + s],
                "relevant": relevant,
                "uncertain": [],
                "irrelevant": [],
                "truth": None,
                "sentence": None,
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "patches.npy", patches)
    from ontology import load_ontology

    index = {
        "format": "lesanet-patch-cache",
        "version": 1,
        "term_list": terms,
        "ontology_version": load_ontology().version,
        "patch_size": 120,
        "lesions": lesions,
    }
    (folder / "index.json").write_text(json.dumps(index))
    (folder / "report.json").write_text(json.dumps({"bad": []}))
    return folder


def tiny_config(epochs: int = 3) -> Config:
    base = load_config(ROOT / "configs" / "cpu-small.yaml")
    return apply_overrides(
        base,
        [
            "model.widths=[4, 8, 8, 16, 16]",
            "model.roi_fc=16",
            "model.embed_dim=16",
            "loss.rhem_samples=500",
            "loss.triplet_count=200",
            f"train.epochs={epochs}",
            f"train.lr_step_epoch={epochs - 1}",
            "train.batch_size=16",
        ],
    )


@pytest.fixture(scope="session")
def phantom_cache(tmp_path_factory) -> Path:
    return write_phantom_cache(tmp_path_factory.mktemp("cache"), 80, seed=0)


@pytest.fixture(scope="session")
def full_run(phantom_cache: Path, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return train(tiny_config(), phantom_cache, tmp_path_factory.mktemp("runs") / "full", progress=False)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_lowers_the_loss_and_writes_a_run(full_run: Path):
    metrics = read_metrics(full_run)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert {"wce", "wce_spl", "rhem", "triplet", "val_mean_auc", "val_mean_f1"} <= set(metrics[0])
    assert metrics[-1]["lr"] == pytest.approx(0.001)  # stepped at epoch 2 of 3
    model, info = load_run(full_run)
    assert info.term_list == TERMS and info.epoch == 3
    assert info.config == tiny_config()
    assert not model.training


def test_resume_after_a_kill_gives_the_same_weights(full_run: Path, phantom_cache: Path, tmp_path: Path):
    torch.set_num_threads(1)
    run = tmp_path / "resumed"
    train(tiny_config(), phantom_cache, run, progress=False, stop_after_epoch=1)  # "killed" after epoch 1
    assert read_run_info(run).epoch == 1
    # a kill after the resume state was saved but before run.json / metrics were updated
    stale = json.loads((run / RUN_FILE).read_text())
    stale.update(epoch=0, checkpoint_sha256="0" * 64)
    (run / RUN_FILE).write_text(json.dumps(stale))
    (run / "metrics.jsonl").unlink()
    train(tiny_config(), phantom_cache, run, resume=True, progress=False)
    a, b = load_file(str(full_run / CHECKPOINT_FILE)), load_file(str(run / CHECKPOINT_FILE))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2, 3]


def _ddp_worker(rank: int, port: int, config: Config, data: TrainingData, run_dir: str) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
        }
    )
    torch.set_num_threads(1)
    fit(config, data, run_dir, progress=False, device="cpu")
    # Skip interpreter teardown: with torch loaded it costs seconds per child on a busy
    # 2-core box, and everything (files, process group) is already finished and closed.
    sys.stdout.flush()
    os._exit(0)


def test_ddp_two_processes_on_gloo(phantom_cache: Path, tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "ddp"
    config = apply_overrides(tiny_config(epochs=1), ["train.batch_size=20"])
    data = load_training_data(config, phantom_cache)  # targets built once, here
    # 63 lesions in batches of 20: the last global batch of 3 would give one process a single
    # lesion; every process must drop it alike, or the other one waits forever in all-reduce.
    data.train_rows = data.train_rows[:63]
    context = torch.multiprocessing.spawn(_ddp_worker, args=(port, config, data, str(run)), nprocs=2, join=False)
    deadline = time.monotonic() + 300
    while not context.join(timeout=2):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("DDP training did not finish in 300 s (processes disagree on the steps?)")
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == [1]
    # three global batches of 20 split over the two processes; the last 3 lesions dropped
    assert metrics[0]["lesions_per_s"] * metrics[0]["seconds"] == pytest.approx(60, rel=0.02)
    _, info = load_run(run)
    assert info.epoch == 1


def test_training_into_an_existing_run_needs_resume(full_run: Path, phantom_cache: Path):
    with pytest.raises(TrainError, match="--resume"):
        train(tiny_config(), phantom_cache, full_run, progress=False)


def test_resume_with_other_settings_is_refused(full_run: Path, phantom_cache: Path):
    with pytest.raises(TrainError, match="different settings"):
        train(tiny_config(), phantom_cache, full_run, epochs=5, resume=True, progress=False)


def test_resume_on_a_cache_with_another_label_set_is_refused(full_run: Path, tmp_path: Path):
    other = write_phantom_cache(tmp_path / "other", 20, seed=1, terms=TERMS[:-1] + ["kidney"])
    with pytest.raises(TrainError, match="another label set"):
        train(tiny_config(), other, full_run, resume=True, progress=False)


def test_cache_label_unknown_to_the_ontology_is_one_error(tmp_path: Path):
    bad = write_phantom_cache(tmp_path / "bad", 10, seed=2, terms=TERMS[:-1] + ["not a lesion term"])
    with pytest.raises(TrainError, match="not a lesion term.*not in ontology"):
        train(tiny_config(), bad, tmp_path / "run", progress=False)


def test_load_run_refuses_other_labels_architecture_and_changed_weights(full_run: Path, tmp_path: Path):
    with pytest.raises(CheckpointError, match="another label list"):
        load_run(full_run, term_list=list(reversed(TERMS)))
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / CHECKPOINT_FILE).write_bytes((full_run / CHECKPOINT_FILE).read_bytes())
    run = json.loads((full_run / RUN_FILE).read_text())
    run["config"]["model"]["widths"] = [8, 8, 8, 16, 16]
    (copy / RUN_FILE).write_text(json.dumps(run))
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        load_run(copy)
    run["checkpoint_sha256"] = "0" * 64
    (copy / RUN_FILE).write_text(json.dumps(run))
    with pytest.raises(CheckpointError, match="sha256"):
        load_run(copy)
    with pytest.raises(CheckpointError, match="no run.json"):
        load_run(tmp_path)


def test_epochs_shorten_the_schedule_proportionally():
    cfg = Config().with_epochs(3)
    assert (cfg.train.epochs, cfg.train.lr_step_epoch) == (3, 2)
    assert Config().with_epochs(15) == Config()


def test_cli_model_summary_reports_24_7_million(capsys):
    assert cli.main(["model", "summary", "--config", str(ROOT / "configs" / "paper.yaml")]) == 0
    out = capsys.readouterr().out
    assert "24.72 M" in out and "labels C = 171" in out


def test_cli_train_writes_a_run_and_reports_bad_config(phantom_cache: Path, tmp_path: Path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "name: tiny\nmodel:\n  widths: [4, 4, 4, 8, 8]\n  roi_fc: 8\n  embed_dim: 8\n"
        "train:\n  batch_size: 16\n  epochs: 10\n"
    )
    run = tmp_path / "run"
    code = cli.main(
        ["train", "--config", str(config), "--data", str(phantom_cache), "-o", str(run), "--epochs", "1", "--quiet"]
    )
    assert code == 0
    assert read_run_info(run).config.train.epochs == 1
    # train ends by calibrating thresholds on val, so predict decides with them straight away
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert (
        thresholds["calibrated_on"] == "val" and thresholds["checkpoint_sha256"] == read_run_info(run).checkpoint_sha256
    )
    assert "calibrated 7 thresholds on val" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_size: 16\n  learning_rate: 0.1\n")
    assert cli.main(["train", "--config", str(bad), "--data", str(phantom_cache), "-o", str(tmp_path / "r2")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml:3" in err[0] and "train.learning_rate" in err[0]


@pytest.mark.parametrize(
    "overrides, parts",
    [
        # the paper's baseline: multiscale multilabel CNN, all four components off
        (["model.spl=false", "loss.rhem=false", "loss.triplet=false", "labels.expand=false"], {"wce"}),
        # its WARP variant, fine-grained positives ranked above their ancestors
        (["model.spl=false", "loss.rhem=false", "loss.triplet=false", "loss.classification=warp"], {"warp"}),
    ],
)
def test_ablation_variants_train(phantom_cache: Path, tmp_path: Path, overrides: list[str], parts: set[str]):
    config = apply_overrides(tiny_config(epochs=1), overrides)
    run = train(config, phantom_cache, tmp_path / "run", progress=False)
    logged = read_metrics(run)[0]
    assert parts <= set(logged) and not ({"wce_spl", "rhem", "triplet", "warp", "wce"} - parts) & set(logged)
    assert np.isfinite(logged["loss"]) and logged["loss"] > 0
    model, info = load_run(run)
    assert model.spl is None and info.config.loss.classification == config.loss.classification


def test_resume_of_a_run_killed_in_its_first_epoch_starts_it(
    full_run: Path, phantom_cache: Path, tmp_path: Path, capsys
):
    torch.set_num_threads(1)
    run = tmp_path / "killed-early"
    run.mkdir()  # what a kill during epoch 1 leaves: the folder, no finished epoch
    train(tiny_config(), phantom_cache, run, resume=True, progress=False)
    assert "no finished epoch to resume" in capsys.readouterr().err
    # bit-identical training gives a byte-identical checkpoint, so the same sha256 (header keys sorted)
    assert (run / CHECKPOINT_FILE).read_bytes() == (full_run / CHECKPOINT_FILE).read_bytes()
    assert read_run_info(run).checkpoint_sha256 == read_run_info(full_run).checkpoint_sha256
    assert oct((run / CHECKPOINT_FILE).stat().st_mode & 0o777) == "0o644"
