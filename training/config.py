"""gd-train's configuration: typed sections, YAML files, presets and `key=value` overrides.

The defaults below are the paper's hyper-parameters (Sec. 5.1) and the released code's where
the paper is silent; `training/configs/paper.yaml` spells them out and `quick.yaml` shrinks
what a 2-core CPU cannot afford. Resolution order: defaults, then `--preset`, then
`--config FILE`, then `key=value` overrides (dotted keys, values parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.clip import FITS, ClipSpec, parse_size
from core.postprocess import ACTIVITY_THRESHOLD
from synth.cameras import CAMERAS
from training.cache import IMAGE_MODALITIES, MODALITIES
from training.distillation import GraphKind, Metric

CONFIG_DIR = Path(__file__).with_name("configs")
PRESETS = ("quick", "paper")
METHODS = ("graph", "multitask", "kd", "crossmodal")  # graph distillation, Table 3a baselines
MODES = ("joint", "student")


class ConfigError(ValueError):
    """A configuration key, value or file is wrong; the message names it."""


@dataclass
class ModelConfig:
    width: int = 64  # ResNet-18 base width; representation = 8 * width (512)
    hidden_size: int = 512  # sequence encoder GRU
    causal: bool = False  # unidirectional sequence encoder (strictly causal streaming)


@dataclass
class ClipConfig:
    """Clip and window geometry; frame rate, size and depth range come from the cache."""

    clip_len: int = 10  # T_c
    clip_step: int = 10  # s_c
    window: int = 10  # T_w
    window_step: int = 5  # s_w, test-time windows


@dataclass
class DistillConfig:
    method: str = "graph"  # graph | multitask | kd | crossmodal (Table 3a baselines)
    graph: str = "learned"  # empty | uniform | prior | learned (Table 3b)
    mode: str = "joint"  # joint: every modality a student; student: one, frozen teachers
    student: str = "depth"  # the student in `student` mode
    metric: str = "cosine"
    lambda_logit: float = 10.0
    lambda_repr: float = 5.0
    alpha: float = 10.0
    gd_size: int = 32
    gd_reg: float = 10.0
    prior_temperature: float = 0.25
    temperature: float = 8.0


@dataclass
class SourceConfig:
    """Classification pre-training on the source (NTU RGB+D layout)."""

    cache: str | None = None  # gd-prep cache; default <workdir>/cache/ntu
    modalities: list[str] = field(
        default_factory=lambda: ["depth", "rgb", "flow", "jjd", "jjv", "jld"]
    )
    num_classes: int | None = None  # default: from the cache's labels
    mini: float = 1.0  # fraction of the training samples kept (paper's mini: 0.05)
    val_fraction: float = 0.2  # training subjects held out for the prior
    split_seed: int = 0  # draws the mini subset and the validation subjects (not `seed`)
    epochs: int = 200
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_steps: list[int] = field(default_factory=lambda: [125, 175])
    lr_gamma: float = 0.1
    uniform_epochs: int = 100  # curriculum: uniform graph first, then the prior / learned
    prior_epochs: int = 0


@dataclass
class TargetConfig:
    """Detection on the target (PKU-MMD layout); tested on `test_modality` alone."""

    cache: str | None = None  # default <workdir>/cache/pku
    modalities: list[str] = field(
        default_factory=lambda: ["depth", "rgb", "flow", "jjd", "jjv", "jld"]
    )
    test_modality: str = "depth"
    num_classes: int | None = None
    mini: float = 1.0
    val_fraction: float = 0.2
    split_seed: int = 0
    epochs: int = 400
    batch_size: int = 8
    windows_per_video: float = 1.0  # random windows per video and epoch, x (frames / span)
    lr_visual: float = 0.001  # SGD with momentum for the visual encoders
    lr_sequence: float = 0.001  # Adam for the sequence encoders and the graph
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_steps: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    background_weight: float = 0.5
    uniform_epochs: int = 200
    prior_epochs: int = 0
    activity_threshold: float = ACTIVITY_THRESHOLD  # gamma


@dataclass
class SynthConfig:
    """`gd-train pipeline`: the gd-synth data it generates when absent."""

    samples: int = 2000  # classification samples (NTU layout)
    videos: int = 60  # detection videos (PKU-MMD layout)
    size: str = "112x112"  # rendered depth (and RGB) size
    actions: list[int] = field(default_factory=lambda: [10, 25])  # per video, min and max
    difficulty: float | None = (
        None  # gd-synth --difficulty (0 clean .. 1 hardest); None: its default
    )
    seed: int = 0
    camera: str | None = None  # gd-synth --camera profile (synth/cameras.py); None: square pixels


@dataclass
class PrepConfig:
    """`gd-train pipeline`: how it runs gd-prep."""

    size: str = "112x112"
    flow: str = "tvl1"  # tvl1 (paper) | farneback (fast)
    fit: str = "stretch"  # frames of another aspect ratio: stretch | crop | pad (core.clip.FITS)
    # Each clip cropped to its person box against the sample's empty-room reference, which
    # gd-synth writes (core.foreground, docs/training.md "A person-crop model").
    person_crop: bool = False
    workers: int = 2


@dataclass
class TrainConfig:
    """How the loops run (not what they learn)."""

    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads per process; 0: cores / local processes
    workers: int = 0  # DataLoader worker processes
    save_every: int = 50  # steps between mid-epoch checkpoints (0: epoch ends only)
    eval_every: int = 1  # epochs between validation passes
    progress: bool = True  # tqdm bars
    graphs: bool = True  # draw the learned graph per class (PNG) after training


@dataclass
class Config:
    seed: int = 0
    transfer: bool = True  # initialise the target's visual encoders from the source's
    transfer_from: str | None = None  # source classifiers; default <workdir>/pretrain
    model: ModelConfig = field(default_factory=ModelConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    prep: PrepConfig = field(default_factory=PrepConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --- merging and type checking ---------------------------------------------------------------


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` checked against the annotation `tp` (int widens to float); ConfigError if not."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected int, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    return value


def _merge(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    """Set the fields of dataclass `obj` from nested `data`; unknown keys are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in hints:
            known = ", ".join(f"{prefix}{k}" for k in hints)
            raise ConfigError(f"unknown config key {name!r} (known: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{name}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], name))


def parse_override(text: str) -> dict[str, Any]:
    """`a.b=value` -> `{"a": {"b": value}}`, value parsed as a YAML scalar or list."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
    nested: dict[str, Any] = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return CONFIG_DIR / f"{name}.yaml"


def load_config(
    preset: str | None = None,
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Config:
    """Defaults <- preset <- file <- overrides, validated."""
    cfg = Config()
    for source in ([preset_path(preset)] if preset else []) + ([path] if path else []):
        _merge(cfg, read_yaml(source))
    for text in overrides:
        _merge(cfg, parse_override(text))
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """A Config from `Config.to_dict()` output (as stored in checkpoints)."""
    cfg = Config()
    _merge(cfg, data)
    validate(cfg)
    return cfg


# --- meaning ---------------------------------------------------------------------------------


def _one_of(key: str, value: str, options: tuple[str, ...] | list[str]) -> None:
    if value not in options:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(options)}")


def _positive(cfg: Any, prefix: str, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{prefix}.{name} must be > 0, got {getattr(cfg, name)}")


def _modalities(key: str, modalities: list[str]) -> None:
    if not modalities:
        raise ConfigError(f"{key}: at least one modality")
    for m in modalities:
        _one_of(f"{key}", m, MODALITIES)
    if len(set(modalities)) != len(modalities):
        raise ConfigError(f"{key}: duplicate modality in {modalities}")


def config_size(key: str, text: str) -> tuple[int, int]:
    """`HxW` of config key `key`, or a ConfigError naming the key."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None


def validate(cfg: Config) -> None:
    d = cfg.distill
    _one_of("distill.method", d.method, METHODS)
    _one_of("distill.graph", d.graph, tuple(g.value for g in GraphKind))
    _one_of("distill.mode", d.mode, MODES)
    _one_of("prep.fit", cfg.prep.fit, FITS)
    if cfg.synth.camera is not None:
        _one_of("synth.camera", cfg.synth.camera, tuple(CAMERAS))
    _one_of("distill.metric", d.metric, tuple(m.value for m in Metric))
    _modalities("source.modalities", cfg.source.modalities)
    _modalities("target.modalities", cfg.target.modalities)
    t = cfg.target
    if t.test_modality not in IMAGE_MODALITIES:
        raise ConfigError(f"target.test_modality: {t.test_modality!r} is not an image modality")
    if t.test_modality not in t.modalities:
        raise ConfigError(
            f"target.test_modality {t.test_modality!r} must be among target.modalities "
            f"{t.modalities}"
        )
    for name, stage in (("source", cfg.source), ("target", t)):
        if not 0 < stage.mini <= 1:
            raise ConfigError(f"{name}.mini must be in (0, 1], got {stage.mini}")
        if not 0 <= stage.val_fraction < 1:
            raise ConfigError(f"{name}.val_fraction must be in [0, 1), got {stage.val_fraction}")
        _positive(stage, name, "epochs", "batch_size")
        if stage.uniform_epochs < 0 or stage.prior_epochs < 0:
            raise ConfigError(f"{name}: curriculum epochs must be >= 0")
    _positive(cfg.source, "source", "lr")
    _positive(t, "target", "lr_visual", "lr_sequence", "windows_per_video")
    _positive(cfg.model, "model", "width", "hidden_size")
    _positive(cfg.clip, "clip", "clip_len", "clip_step", "window", "window_step")
    if cfg.clip.window_step > cfg.clip.window:
        raise ConfigError("clip.window_step must not exceed clip.window")
    config_size("synth.size", cfg.synth.size)
    if cfg.synth.difficulty is not None and not 0 <= cfg.synth.difficulty <= 1:
        raise ConfigError(f"synth.difficulty must be in [0, 1], got {cfg.synth.difficulty}")
    actions = cfg.synth.actions
    if len(actions) != 2 or not 1 <= actions[0] <= actions[1]:
        raise ConfigError(f"synth.actions must be [min, max] with 1 <= min <= max, got {actions}")
    config_size("prep.size", cfg.prep.size)
    _one_of("prep.flow", cfg.prep.flow, ("tvl1", "farneback"))
    grid = ClipSpec().clip_len  # gd-prep crops each clip of this grid to its own box
    if cfg.prep.person_crop and not cfg.clip.clip_len == cfg.clip.clip_step == grid:
        raise ConfigError(
            f"prep.person_crop crops gd-prep's clips of {grid} kept frames: clip.clip_len and "
            f"clip.clip_step must both be {grid}, got {cfg.clip.clip_len} and "
            f"{cfg.clip.clip_step}"
        )
    _one_of("train.device", cfg.train.device, ("auto", "cpu", "cuda"))
    if cfg.train.save_every < 0 or cfg.train.eval_every < 1:
        raise ConfigError("train.save_every must be >= 0 and train.eval_every >= 1")
