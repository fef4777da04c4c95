"""Training configuration: the shipped YAML files, strict keys, types and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from vision.config import Config, ConfigError, apply_overrides, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_paper_yaml_holds_the_paper_defaults():
    cfg = load_config(ROOT / "configs" / "paper.yaml")
    assert cfg == Config()
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.lr_step_epoch, cfg.train.batch_size) == (0.01, 15, 10, 128)
    assert (cfg.loss.rhem_samples, cfg.loss.triplet_count, cfg.loss.triplet_weight) == (10_000, 5_000, 5.0)


def test_cpu_small_is_the_same_family_with_fewer_channels():
    cfg = load_config(ROOT / "configs" / "cpu-small.yaml")
    assert cfg.name == "cpu-small"
    assert cfg.model.patch_size == 120 and cfg.model.roi_size == 5
    assert all(s < p for s, p in zip(cfg.model.widths, Config().model.widths))


def test_unknown_key_names_file_line_and_known_keys(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nloss:\n  rhem: false\n  rhem_gama: 2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:4: unknown key 'loss\.rhem_gama' \(known: .*rhem_gamma"):
        load_config(path)
    path.write_text("optimiser:\n  lr: 1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:1: unknown key 'optimiser'"):
        load_config(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  epochs: ten\n", "train.epochs must be an integer"),
        ("model:\n  widths: [1, 2]\n", "model.widths must be a list of 5"),
        ("loss:\n  classification: hinge\n", "must be one of wce, warp"),
        ("labels:\n  positives: X\n", "must be one of RU, RUI"),
        ("train:\n  batch_size: 1\n", "batch_size must be >= 2"),
        ("train: [1\n", "not valid YAML"),
    ],
)
def test_bad_values_are_one_clear_error(tmp_path: Path, text: str, message: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_overrides_switch_components_for_ablations():
    cfg = apply_overrides(
        Config(),
        ["loss.rhem=false", "loss.triplet=false", "model.spl=false", "labels.expand=false", "labels.positives=RUI"],
    )
    assert not (cfg.loss.rhem or cfg.loss.triplet or cfg.model.spl or cfg.labels.expand)
    assert cfg.labels.positives == "RUI"
    with pytest.raises(ConfigError, match="unknown key 'loss.rhm'"):
        apply_overrides(Config(), ["loss.rhm=false"])
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        apply_overrides(Config(), ["rhem"])


def test_config_round_trips_through_its_dict():
    cfg = load_config(ROOT / "configs" / "cpu-small.yaml")
    assert config_from_dict(cfg.to_dict()) == cfg
