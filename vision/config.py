"""Training configuration as data: dataclasses with the paper's defaults, loaded from YAML.

A config file has up to five sections (``name``, ``model``, ``loss``, ``labels``,
``train``); any key that is not a field of the dataclass is an error naming the file,
the line and the known keys, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ontology.errors import LesanetError


class ConfigError(LesanetError, ValueError):
    """A config file or override that does not fit the schema (one line)."""


@dataclass(frozen=True)
class ModelConfig:
    """LesaNet on a VGG-16-BN trunk (torchvision's layer configuration "D")."""

    # Output channels of the five VGG stages; the paper uses torchvision's 64..512.
    widths: tuple[int, int, int, int, int] = (64, 128, 256, 512, 512)
    roi_size: int = 5  # each multiscale RoI pool -> roi_size x roi_size
    roi_fc: int = 256  # each pooled map -> FC of this width; five are concatenated
    embed_dim: int = 256  # embedding for the triplet loss and retrieval
    spl: bool = True  # score propagation layer s~ = W s + b
    patch_size: int = 120
    pixel_mean: float = 50.0  # subtracted from the cache's uint8 pixels at input


@dataclass(frozen=True)
class LossConfig:
    """L = L_WCE + L_RHEM + L_WCE,SPL + lambda L_triplet (each part can be switched off)."""

    classification: str = "wce"  # "wce" (weighted CE) or "warp" (ranking loss, Gong et al.)
    weight_clamp: float = 300.0  # cap of the class-balancing weights beta
    rhem: bool = True
    rhem_gamma: float = 2.0
    rhem_samples: int = 10_000
    triplet: bool = True
    triplet_theta: float = 1.0  # sim(A, B) >= theta
    triplet_count: int = 5_000  # triplets per batch
    triplet_margin: float = 0.1
    triplet_weight: float = 5.0  # lambda
    warp_margin: float = 1.0
    warp_fine_over_coarse: bool = True  # also rank fine-grained positives above their ancestors


@dataclass(frozen=True)
class LabelConfig:
    """How per-lesion targets are built from the mined labels (vision.data.labels.build_targets)."""

    positives: str = "RU"  # "RU": relevant + uncertain; "RUI": text-mined filter off
    expand: bool = True  # add ontology ancestors / composites to the positives


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    lr: float = 0.01
    lr_step_epoch: int = 10  # lr *= lr_decay from this epoch on (0-based epoch index)
    lr_decay: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    grad_clip: float = 10.0
    min_positives: int = 1  # train on lesions with at least this many positive labels
    seed: int = 0
    bf16: bool = True  # autocast on CUDA only
    channels_last: bool = True  # on CUDA only


@dataclass(frozen=True)
class Config:
    name: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists); ``config_from_dict`` inverts it."""
        return json_ready(dataclasses.asdict(self))

    def with_epochs(self, epochs: int) -> Config:
        """The schedule shortened (or stretched) proportionally to ``epochs``."""
        if epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {epochs}")
        t = self.train
        step = max(1, round(t.lr_step_epoch * epochs / t.epochs)) if t.lr_step_epoch < t.epochs else epochs
        return dataclasses.replace(self, train=dataclasses.replace(t, epochs=epochs, lr_step_epoch=step))


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "loss": LossConfig,
    "labels": LabelConfig,
    "train": TrainConfig,
}
_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("loss", "classification"): ("wce", "warp"),
    ("labels", "positives"): ("RU", "RUI"),
}


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def _coerce(section: str, key: str, value: Any, default: Any, where: str) -> Any:
    """Check ``value`` against the type of the default; tuples stay tuples."""
    name = f"{section}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {name} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise ConfigError(f"{where}: {name} must be a list of {len(default)} values, got {value!r}")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise ConfigError(f"{where}: {name} must hold positive integers, got {value!r}")
        return tuple(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a string, got {value!r}")
        choices = _CHOICES.get((section, key))
        if choices and value not in choices:
            raise ConfigError(f"{where}: {name} must be one of {', '.join(choices)}, got {value!r}")
        return value
    raise ConfigError(f"{where}: {name}: unsupported value {value!r}")  # pragma: no cover


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line number (1-based) of every mapping key, by its path, for error messages."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = (*path, str(key_node.value))
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key)

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def config_from_dict(
    data: Mapping[str, Any], source: str = "config", lines: Mapping[tuple[str, ...], int] | None = None
) -> Config:
    """Build a validated ``Config`` from nested dicts; unknown keys are errors."""
    lines = lines or {}

    def where(*path: str) -> str:
        line = lines.get(tuple(path))
        return f"{source}:{line}" if line else source

    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    known_top = ["name", *_SECTIONS]
    name = data.get("name", Config.name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where('name')}: name must be a non-empty string")
    sections: dict[str, Any] = {}
    for top, body in data.items():
        if top == "name":
            continue
        if top not in _SECTIONS:
            raise ConfigError(f"{where(str(top))}: unknown key {top!r} (known: {', '.join(known_top)})")
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where(top)}: section {top!r} must be a mapping")
        cls = _SECTIONS[top]
        defaults = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
        values = {}
        for key, value in body.items():
            if key not in defaults:
                raise ConfigError(f"{where(top, str(key))}: unknown key '{top}.{key}' (known: {', '.join(defaults)})")
            values[key] = _coerce(top, key, value, defaults[key], where(top, key))
        sections[top] = cls(**values)
    config = Config(name=name, **sections)
    _check_ranges(config, source)
    return config


def _check_ranges(config: Config, source: str) -> None:
    t, loss, m = config.train, config.loss, config.model
    problems = []
    if t.epochs < 1:
        problems.append("train.epochs must be >= 1")
    if t.batch_size < 2:
        problems.append("train.batch_size must be >= 2")
    if t.lr <= 0:
        problems.append("train.lr must be > 0")
    if m.roi_size < 1 or m.roi_fc < 1 or m.embed_dim < 1:
        problems.append("model.roi_size, roi_fc and embed_dim must be >= 1")
    if loss.rhem_samples < 1 or loss.triplet_count < 1:
        problems.append("loss.rhem_samples and loss.triplet_count must be >= 1")
    if problems:
        raise ConfigError(f"{source}: {problems[0]}")


def load_config(path: str | Path) -> Config:
    """Read a YAML config; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{at}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return config_from_dict(data or {}, str(path), _key_lines(text))


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` overrides (value parsed as YAML), e.g. ``loss.rhem=false``."""
    data = config.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or parts[0] not in _SECTIONS:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION in {', '.join(_SECTIONS)}")
        data[parts[0]][parts[1]] = yaml.safe_load(raw)
    return config_from_dict(data, "--set")
