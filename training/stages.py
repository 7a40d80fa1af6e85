"""The stages of gd-train and how each is built (paper Sec. 3-4; design.md §4, §5, §11).

`pretrain`: action classification on the source cache (NTU RGB+D layout), one Classifier per
    modality, graph distillation over all of them (`distill.mode=joint`: every modality a
    student of the others) or into one student from frozen teachers (`student`: the
    teachers are trained first, each alone, then frozen). Curriculum: uniform graph, then the
    prior from validation accuracies, then the learned graph.
`detect`: action detection on the target cache (PKU-MMD layout), one Detector per target
    training modality, visual encoders transferred from `pretrain`, graph distillation per
    clip. The test modality's Detector is the deployable model.

A `Stage` is one training run of a stage (student mode has two: the teachers, then the
student); `training.loop.fit` trains it and `training.run.run_stage` runs its phases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from core.clip import ClipSpec
from training import data as D
from training.baselines import CrossModalDistillation, KnowledgeDistillation, MultiTask
from training.cache import IMAGE_MODALITIES, Cache, CacheError
from training.checkpoint import Architecture, build_network, load_checkpoint
from training.config import Config, SourceConfig, TargetConfig
from training.distillation import Curriculum, Distiller, GraphDistillation, GraphKind
from training.samplers import class_weights, clip_labels, window_clip_starts

STAGES = ("pretrain", "detect")
LAYOUT = {"pretrain": "ntu", "detect": "pku"}  # default cache folder of each stage


class TrainingError(ValueError):
    """The run cannot start: a missing cache, a modality the cache lacks, a state to resume."""


@dataclass
class Stage:
    """One training run: which networks learn, from what, with which distiller."""

    name: str  # "pretrain" | "detect" | "finetune"
    task: str  # "classification" | "detection"
    out: Path
    cache: Cache
    spec: ClipSpec
    modalities: list[str]  # forwarded each step, in the distiller's order
    trained: list[str]  # whose networks learn (the others are frozen teachers)
    nets: nn.ModuleDict  # every modality of the stage (shared between phases)
    archs: dict[str, Architecture]
    distiller: Distiller | None
    curriculum: Curriculum | None
    train_set: Dataset
    val: list[int]
    classes: list[str]  # action names (detection adds "background" in checkpoints)
    settings: SourceConfig | TargetConfig
    class_weights: Tensor | None = None
    state_name: str = "state.pt"
    history: list[dict[str, Any]] = field(default_factory=list)


def open_cache(cfg_path: str | None, workdir: Path, stage: str) -> Cache:
    path = Path(cfg_path) if cfg_path else workdir / "cache" / LAYOUT[stage]
    key = "source.cache" if stage == "pretrain" else "target.cache"
    try:
        return Cache(path)
    except CacheError as e:
        raise TrainingError(f"{key}: {e}; run gd-prep, or gd-train pipeline") from None


def _check_modalities(cache: Cache, modalities: list[str], key: str) -> None:
    missing = [m for m in modalities if m not in cache.modalities]
    if missing:
        raise TrainingError(
            f"{key}: the cache {cache.root} has no {missing}; it has {cache.modalities}"
        )


def architecture(cfg: Config, cache: Cache, modality: str, num_classes: int) -> Architecture:
    vector_dim = None if modality in IMAGE_MODALITIES else int(cache.array(modality).shape[-1])
    return Architecture(
        modality=modality,
        clip_len=cfg.clip.clip_len,
        width=cfg.model.width,
        num_classes=num_classes,
        vector_dim=vector_dim,
        hidden_size=cfg.model.hidden_size,
        causal=cfg.model.causal,
    )


def build_distiller(
    cfg: Config, modalities: list[str], students: list[str], num_classes: int, repr_dim: int
) -> Distiller | None:
    if len(modalities) < 2:
        return None
    d, m = cfg.distill, len(modalities)
    idx = None if students == modalities else [modalities.index(s) for s in students]
    if d.method == "multitask":
        return MultiTask(m, repr_dim, idx)
    if d.method == "kd":
        return KnowledgeDistillation(m, idx, temperature=d.temperature)
    if d.method == "crossmodal":
        return CrossModalDistillation(m, idx)
    return GraphDistillation(
        m, num_classes, repr_dim, idx, graph=d.graph, metric=d.metric,
        lambda_logit=d.lambda_logit, lambda_repr=d.lambda_repr, alpha=d.alpha,
        gd_size=d.gd_size, gd_reg=d.gd_reg, prior_temperature=d.prior_temperature,
        temperature=d.temperature,
    )  # fmt: skip


def curriculum(cfg: Config, settings: SourceConfig | TargetConfig) -> Curriculum:
    """Graphs that use the prior start uniform for `uniform_epochs`; the others are constant."""
    final = GraphKind(cfg.distill.graph)
    if final in (GraphKind.PRIOR, GraphKind.LEARNED):
        return Curriculum(settings.uniform_epochs, settings.prior_epochs, final)
    return Curriculum(final=final)


def _phases(cfg: Config, name: str, modalities: list[str], make: Any) -> list[Stage]:
    """joint: one run, every modality a student. student: the teachers first (each alone, no
    distillation), then the student from the frozen teachers."""
    if cfg.distill.mode == "joint" or len(modalities) == 1:
        return [make(modalities, modalities, "state.pt")]
    student = cfg.distill.student
    key = "source.modalities" if name == "pretrain" else "target.modalities"
    if student not in modalities:
        raise TrainingError(f"distill.student {student!r} is not among {key} {modalities}")
    teachers = [m for m in modalities if m != student]
    return [make(teachers, teachers, "teachers-state.pt"), make(modalities, [student], "state.pt")]


@dataclass
class _Setup:
    """What both stages derive the same way from their config section and cache."""

    cache: Cache
    spec: ClipSpec
    num_classes: int  # L (detection adds background)
    train: list[int]
    val: list[int]
    archs: dict[str, Architecture]
    nets: nn.ModuleDict


def _setup(
    cfg: Config,
    workdir: Path,
    section: SourceConfig | TargetConfig,
    name: str,
    task: str,
    cache: Cache | None = None,
    spec: ClipSpec | None = None,
) -> _Setup:
    """`cache` and `spec` default to the section's cache and its clip spec (fine-tuning gives
    its own: a relabelled cache, the starting model's spec)."""
    key = "source" if name == "pretrain" else "target"
    cache = cache or open_cache(section.cache, workdir, name)
    _check_modalities(cache, section.modalities, f"{key}.modalities")
    spec = spec or D.clip_spec(
        cache, cfg.clip.clip_len, cfg.clip.clip_step, cfg.clip.window, cfg.clip.window_step
    )
    count = D.num_classification_classes if task == "classification" else D.num_detection_classes
    num_classes = section.num_classes or count(cache)
    train, val = D.split_samples(cache, section.mini, section.val_fraction, section.split_seed)
    torch.manual_seed(cfg.seed)
    archs = {m: architecture(cfg, cache, m, num_classes) for m in section.modalities}
    nets = nn.ModuleDict({m: build_network(task, a) for m, a in archs.items()})
    return _Setup(cache, spec, num_classes, train, val, archs, nets)


def build_pretrain(cfg: Config, workdir: Path) -> list[Stage]:
    s = cfg.source
    setup = _setup(cfg, workdir, s, "pretrain", "classification")
    cache, spec, num_classes = setup.cache, setup.spec, setup.num_classes
    train, val, archs, nets = setup.train, setup.val, setup.archs, setup.nets
    classes = D.class_names(cache, num_classes)
    out = workdir / "pretrain"

    def make(modalities: list[str], trained: list[str], state_name: str) -> Stage:
        torch.manual_seed(cfg.seed + 1)
        return Stage(
            name="pretrain", task="classification", out=out, cache=cache, spec=spec,
            modalities=modalities, trained=trained, nets=nets, archs=archs,
            distiller=build_distiller(cfg, modalities, trained, num_classes, 8 * cfg.model.width),
            curriculum=curriculum(cfg, s),
            train_set=D.ClassificationClips(cache, train, modalities, spec, True, cfg.seed),
            val=val, classes=classes, settings=s, state_name=state_name,
        )  # fmt: skip

    return _phases(cfg, "pretrain", list(s.modalities), make)


def transfer_encoders(cfg: Config, workdir: Path, nets: nn.ModuleDict, archs: dict) -> list[str]:
    """Load each target modality's visual encoder from the source classifier of the same
    modality (`transfer_from`, default <workdir>/pretrain); returns those transferred."""
    source = Path(cfg.transfer_from) if cfg.transfer_from else workdir / "pretrain"
    found = {m: source / f"{m}.pt" for m in nets if (source / f"{m}.pt").is_file()}
    if not found:
        raise TrainingError(
            f"transfer: no source classifiers (<modality>.pt) in {source}; run gd-train "
            "pretrain first, set transfer_from, or set transfer=false"
        )
    for m, path in found.items():
        ckpt = load_checkpoint(path)
        a, b = ckpt.architecture, archs[m]
        if (a.clip_len, a.width, a.vector_dim) != (b.clip_len, b.width, b.vector_dim):
            raise TrainingError(
                f"transfer: {path} has clip_len/width/vector_dim {a.clip_len}/{a.width}/"
                f"{a.vector_dim}, the target wants {b.clip_len}/{b.width}/{b.vector_dim}"
            )
        encoder = {
            k[len("encoder.") :]: v for k, v in ckpt.model.items() if k.startswith("encoder.")
        }
        nets[m].encoder.load_state_dict(encoder)
    return sorted(found)


def training_class_weights(
    cache: Cache, samples: list[int], spec: ClipSpec, n: int, bg: float
) -> Tensor:
    """Inverse-frequency weights of the grid clips of the training videos (design §4)."""
    labels = [
        clip_labels(
            np.asarray(cache.samples[i].info["segments"]).reshape(-1, 4),
            window_clip_starts(cache.samples[i].length, spec),
            spec,
        )
        for i in samples
    ]
    return torch.from_numpy(class_weights(np.concatenate(labels), n, bg))


def build_detect(
    cfg: Config,
    workdir: Path,
    cache: Cache | None = None,
    spec: ClipSpec | None = None,
    name: str = "detect",
) -> list[Stage]:
    """The detect stage's phases, writing into <workdir>/<name>; `cache` and `spec` as in
    `_setup` (`training.finetune` gives them)."""
    t = cfg.target
    setup = _setup(cfg, workdir, t, "detect", "detection", cache, spec)
    cache, spec, num_actions = setup.cache, setup.spec, setup.num_classes
    train, val, archs, nets = setup.train, setup.val, setup.archs, setup.nets
    if cfg.transfer:
        transfer_encoders(cfg, workdir, nets, archs)
    weights = training_class_weights(cache, train, spec, num_actions, t.background_weight)
    out = workdir / name
    # The test modality first, so that in joint mode it is student 0.
    modalities = [t.test_modality] + [m for m in t.modalities if m != t.test_modality]

    def make(modalities: list[str], trained: list[str], state_name: str) -> Stage:
        torch.manual_seed(cfg.seed + 1)
        train_set = D.DetectionWindows(
            cache, train, modalities, spec, cfg.seed, t.windows_per_video
        )
        repr_dim = cfg.model.hidden_size
        return Stage(
            name=name, task="detection", out=out, cache=cache, spec=spec,
            modalities=modalities, trained=trained, nets=nets, archs=archs,
            distiller=build_distiller(cfg, modalities, trained, num_actions + 1, repr_dim),
            curriculum=curriculum(cfg, t), train_set=train_set, val=val,
            classes=D.class_names(cache, num_actions), settings=t, class_weights=weights,
            state_name=state_name,
        )  # fmt: skip

    return _phases(cfg, name, modalities, make)
