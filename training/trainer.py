"""The training loops of gd-train (paper Sec. 3-4; design.md §4, §5, §11).

`pretrain`: action classification on the source cache (NTU RGB+D layout), one Classifier per
    modality, graph distillation over all of them (`distill.mode=joint`: every modality a
    student of the others) or into one student from frozen teachers (`student`: the
    teachers are trained first, each alone, then frozen). Curriculum: uniform graph, then the
    prior from validation accuracies, then the learned graph.
`detect`: action detection on the target cache (PKU-MMD layout), one Detector per target
    training modality, visual encoders transferred from `pretrain`, graph distillation per
    clip. The test modality's Detector is the deployable model.

A stage writes into `<workdir>/<stage>/`:

    <modality>.pt   deployable checkpoints (`training.checkpoint`), at the end
    state.pt        resume state, atomically at every epoch end and every `train.save_every`
                    steps: networks, distiller, optimizers, schedulers, RNG states, position
                    in the epoch, metric history
    metrics.csv     one row per epoch, rewritten from the history (a resumed run's file
                    equals an unbroken run's); TensorBoard events in tb/
    done.json       written last: the stage is finished and is skipped from then on
"""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from core.bundle import portable
from core.clip import ClipSpec
from core.files import atomic_output, atomic_write_text
from training import data as D
from training import distributed
from training.baselines import CrossModalDistillation, KnowledgeDistillation, MultiTask
from training.cache import IMAGE_MODALITIES, Cache, CacheError
from training.checkpoint import (
    Architecture,
    Checkpoint,
    build_network,
    load_checkpoint,
    save_checkpoint,
)
from training.config import Config, SourceConfig, TargetConfig
from training.distillation import Curriculum, Distiller, GraphDistillation, GraphKind
from training.evaluate import (
    agreement,
    classification_accuracies,
    clip_accuracy,
    detect,
    fit_figures,
    ground_truth,
    map_figures,
    trivial_baseline,
    write_predictions,
)
from training.samplers import class_weights, clip_labels, window_clip_starts

STAGES = ("pretrain", "detect")
LAYOUT = {"pretrain": "ntu", "detect": "pku"}  # default cache folder of each stage


class TrainingError(ValueError):
    """The run cannot start: a missing cache, a modality the cache lacks, a state to resume."""


class Interrupted(RuntimeError):
    """Raised by the `stop_after` hook (tests of resuming)."""


@dataclass
class Stage:
    """One training run: which networks learn, from what, with which distiller."""

    name: str  # "pretrain" | "detect"
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


# --- building ------------------------------------------------------------------------------


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
    cfg: Config, workdir: Path, section: SourceConfig | TargetConfig, name: str, task: str
) -> _Setup:
    key = "source" if name == "pretrain" else "target"
    cache = open_cache(section.cache, workdir, name)
    _check_modalities(cache, section.modalities, f"{key}.modalities")
    spec = D.clip_spec(
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


def build_detect(cfg: Config, workdir: Path) -> list[Stage]:
    t = cfg.target
    setup = _setup(cfg, workdir, t, "detect", "detection")
    cache, spec, num_actions = setup.cache, setup.spec, setup.num_classes
    train, val, archs, nets = setup.train, setup.val, setup.archs, setup.nets
    if cfg.transfer:
        transfer_encoders(cfg, workdir, nets, archs)
    weights = training_class_weights(cache, train, spec, num_actions, t.background_weight)
    out = workdir / "detect"
    # The test modality first, so that in joint mode it is student 0.
    modalities = [t.test_modality] + [m for m in t.modalities if m != t.test_modality]

    def make(modalities: list[str], trained: list[str], state_name: str) -> Stage:
        torch.manual_seed(cfg.seed + 1)
        train_set = D.DetectionWindows(
            cache, train, modalities, spec, cfg.seed, t.windows_per_video
        )
        repr_dim = cfg.model.hidden_size
        return Stage(
            name="detect", task="detection", out=out, cache=cache, spec=spec,
            modalities=modalities, trained=trained, nets=nets, archs=archs,
            distiller=build_distiller(cfg, modalities, trained, num_actions + 1, repr_dim),
            curriculum=curriculum(cfg, t), train_set=train_set, val=val,
            classes=D.class_names(cache, num_actions), settings=t, class_weights=weights,
            state_name=state_name,
        )  # fmt: skip

    return _phases(cfg, "detect", modalities, make)


# --- one step ------------------------------------------------------------------------------


def make_optimizers(stage: Stage) -> list[torch.optim.Optimizer]:
    """Classification: SGD with momentum over everything that learns. Detection: SGD for the
    visual encoders, Adam for the sequence encoders and the distiller (paper Sec. 5.1)."""
    s = stage.settings
    extra = list(stage.distiller.parameters()) if stage.distiller is not None else []
    nets = [stage.nets[m] for m in stage.trained]
    if stage.task == "classification":
        params = [p for n in nets for p in n.parameters()] + extra
        return [torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)]
    visual = [p for n in nets for p in n.encoder.parameters()]
    sequence = [p for n in nets for p in n.sequence.parameters()] + extra
    return [
        torch.optim.SGD(visual, lr=s.lr_visual, momentum=s.momentum, weight_decay=s.weight_decay),
        torch.optim.Adam(sequence, lr=s.lr_sequence, weight_decay=s.weight_decay),
    ]


def compute_loss(stage: Stage, batch: dict) -> tuple[Tensor, dict[str, float]]:
    """Σ_k CE_k over the students + the distiller's total, on the global batch (each rank's
    outputs gathered, see `training.distributed`)."""
    logits, reprs = [], []
    for m in stage.modalities:
        with torch.set_grad_enabled(m in stage.trained and torch.is_grad_enabled()):
            lg, rp = stage.nets[m](batch["inputs"][m])
        logits.append(distributed.gather(lg))
        reprs.append(distributed.gather(rp))
    labels = distributed.gather(batch["label"]).reshape(-1)
    logs: dict[str, float] = {}
    loss = torch.zeros((), device=labels.device)
    for m, lg in zip(stage.modalities, logits, strict=True):
        if m in stage.trained:
            ce = F.cross_entropy(lg.reshape(len(labels), -1), labels, weight=stage.class_weights)
            logs[f"ce/{m}"] = ce.item()
            loss = loss + ce
    if stage.distiller is not None:
        out = stage.distiller(logits, reprs)
        students = [stage.modalities[k] for k in stage.distiller.students]
        for m, im, reg in zip(
            students, out.imitation.tolist(), out.regularizer.tolist(), strict=True
        ):
            logs[f"imitation/{m}"] = im
            if (
                isinstance(stage.distiller, GraphDistillation)
                and stage.distiller.graph is GraphKind.LEARNED
            ):
                logs[f"regularizer/{m}"] = reg
        loss = loss + out.total
    logs["loss"] = loss.item()
    return loss, logs


# --- validation ----------------------------------------------------------------------------


def validate(
    stage: Stage, device: torch.device, samples: list[int] | None = None
) -> dict[str, float]:
    """Accuracy of every modality of the stage on `samples` (default: the validation split):
    classification over 5 uniform clips, detection per grid clip of the offline scores."""
    samples = stage.val if samples is None else samples
    if not samples:
        return {}
    if stage.task == "classification":
        clips = D.ClassificationClips(
            stage.cache, samples, stage.modalities, stage.spec, train=False
        )
        return classification_accuracies(
            {m: stage.nets[m] for m in stage.modalities}, clips, device
        )
    out = {}
    for m in stage.modalities:
        _, probs = detect(stage.nets[m], stage.cache, samples, m, stage.spec, device, 0.5)
        out[m] = clip_accuracy(stage.cache, probs, stage.spec)
    return out


def begin_epoch(stage: Stage, epoch: int, device: torch.device, fresh: bool) -> None:
    """Set the curriculum's graph; where the prior starts, measure it on validation first
    (only at the start of an epoch: a resumed one has it in the restored state)."""
    gd = stage.distiller
    if not isinstance(gd, GraphDistillation) or stage.curriculum is None:
        return
    if fresh and stage.curriculum.needs_prior(epoch):
        accuracy = validate(stage, device)
        if accuracy:
            gd.set_prior([accuracy[m] for m in stage.modalities])
        else:
            tqdm.write(f"{stage.name}: no validation samples; the prior stays uniform")
    gd.graph = stage.curriculum.graph_kind(epoch)


# --- state ---------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _comparable(config: dict) -> dict:
    """What a resumed run must share with the run it continues (not how it runs)."""
    return {k: v for k, v in config.items() if k not in ("train", "synth", "prep")}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(set(a) | set(b))
            for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        ]
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance(cfg: Config, stage: Stage) -> dict[str, Any]:
    """Where a checkpoint came from. The command and the dataset's settings are made
    `portable`: they travel into model bundles, which must not name this machine's folders.
    `cache` stays as given, so that gd-export finds the cache here by default."""
    return {
        "stage": stage.name,
        "config": cfg.to_dict(),
        "command": portable(list(sys.argv)),
        "seed": cfg.seed,
        "git_commit": git_commit(),
        "cache": str(stage.cache.root),
        "dataset": portable(stage.cache.meta.get("settings", {})),
        "torch": torch.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _checkpoint(stage: Stage, modality: str, cfg: Config, metrics: dict) -> Checkpoint:
    """The deployable network of one modality (no resume state: that is state.pt)."""
    names = stage.classes if stage.task == "classification" else ["background", *stage.classes]
    return Checkpoint(
        task=stage.task, architecture=stage.archs[modality], clip=stage.spec, classes=names,
        model={
            k: v.detach().cpu().contiguous() for k, v in stage.nets[modality].state_dict().items()
        },
        provenance=provenance(cfg, stage), metrics=metrics, state={},
    )  # fmt: skip


class Recorder:
    """Per-epoch metrics: metrics.csv (rewritten whole from the history) and TensorBoard."""

    def __init__(self, stage: Stage, enabled: bool, first_epoch: int) -> None:
        self.stage, self.writer = stage, None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # slow import; rank 0 only

            # purge_step drops events a killed run logged after its last checkpoint.
            self.writer = SummaryWriter(str(stage.out / "tb"), purge_step=first_epoch + 1)

    def record(self, row: dict[str, Any]) -> None:
        self.stage.history.append(row)
        if self.writer is None:
            return
        columns = list(dict.fromkeys(k for r in self.stage.history for k in r))
        text = io.StringIO()
        w = csv.DictWriter(text, columns, lineterminator="\n")
        w.writeheader()
        w.writerows(self.stage.history)
        atomic_write_text(self.stage.out / "metrics.csv", text.getvalue())
        for key, value in row.items():
            if isinstance(value, int | float) and key != "epoch":
                self.writer.add_scalar(f"{self.stage.name}/{key}", value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --- the loop ------------------------------------------------------------------------------


def place(stage: Stage, dist: distributed.Dist) -> None:
    """Networks, distiller and class weights onto the device; BatchNorm synchronized across
    ranks when distributed."""
    # channels_last convolution weights: ~25% faster training steps on CPU (bench/train_step.py)
    stage.nets.to(dist.device, memory_format=torch.channels_last)
    if stage.distiller is not None:
        stage.distiller.to(dist.device)
    if stage.class_weights is not None:
        stage.class_weights = stage.class_weights.to(dist.device)
    if dist.world > 1:
        distributed.sync_batchnorm(stage.nets)


def fit(
    stage: Stage,
    cfg: Config,
    dist: distributed.Dist,
    resume: bool = False,
    stop_after: int | None = None,
) -> None:
    """Train `stage` for its epochs, or continue it from its state file."""
    device, settings = dist.device, stage.settings
    place(stage, dist)
    optimizers = make_optimizers(stage)
    schedulers = [
        torch.optim.lr_scheduler.MultiStepLR(o, settings.lr_steps, settings.lr_gamma)
        for o in optimizers
    ]
    modules = {"nets": stage.nets, "distiller": stage.distiller}

    def save(epoch: int, step: int, sums: dict[str, float]) -> None:
        if not dist.main:
            return
        state = {
            "epoch": epoch, "step": step, "sums": sums, "history": stage.history,
            "config": cfg.to_dict(), "rng": rng_state(),
            "modules": {k: v.state_dict() for k, v in modules.items() if v is not None},
            "optimizers": [o.state_dict() for o in optimizers],
            "schedulers": [s.state_dict() for s in schedulers],
        }  # fmt: skip
        with atomic_output(stage.out / stage.state_name, suffix=".pt") as tmp:
            torch.save(state, tmp)

    start_epoch, start_step, sums = 0, 0, {}
    path = stage.out / stage.state_name
    if path.exists():
        if not resume:
            raise TrainingError(
                f"{path} exists: pass --resume to continue that run, or use another --workdir"
            )
        state = torch.load(path, map_location=device, weights_only=False)
        changed = _differences(_comparable(state["config"]), _comparable(cfg.to_dict()))
        if changed:
            raise TrainingError(f"{path} was made with another config: {'; '.join(changed)}")
        for key, module in modules.items():
            if module is not None:
                module.load_state_dict(state["modules"][key])
        for o, s in zip(optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)
        for sch, s in zip(schedulers, state["schedulers"], strict=True):
            sch.load_state_dict(s)
        set_rng_state(state["rng"])
        start_epoch, start_step, sums = state["epoch"], state["step"], state["sums"]
        stage.history = list(state["history"])
    else:
        stage.out.mkdir(parents=True, exist_ok=True)
        for module in modules.values():
            if module is not None:
                distributed.broadcast_state(module)
    if start_epoch >= settings.epochs:
        return

    batches = D.EpochBatches(
        len(stage.train_set), settings.batch_size, cfg.seed, dist.rank, dist.world
    )
    params = [p for o in optimizers for g in o.param_groups for p in g["params"]]
    recorder = Recorder(stage, dist.main, start_epoch)
    done_steps = 0
    try:
        for epoch in range(start_epoch, settings.epochs):
            first = start_step if epoch == start_epoch else 0
            if first == 0:
                sums = {}
            begin_epoch(stage, epoch, device, fresh=first == 0)
            for m in stage.nets:
                stage.nets[m].train(m in stage.trained)
            t0 = time.perf_counter()
            bar = tqdm(
                total=len(batches), initial=first, unit="batch", leave=False,
                desc=f"{stage.name} {epoch + 1}/{settings.epochs}",
                disable=not (dist.main and cfg.train.progress),
            )  # fmt: skip
            shards = batches.shards(epoch, first)
            for step, batch in enumerate(
                D.loader(stage.train_set, shards, cfg.train.workers), first
            ):
                loss, logs = compute_loss(stage, D.to_device(batch, device))
                for o in optimizers:
                    o.zero_grad(set_to_none=True)
                loss.backward()
                distributed.average_gradients(params)
                for o in optimizers:
                    o.step()
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                sums["steps"] = sums.get("steps", 0) + 1
                bar.update()
                bar.set_postfix(loss=f"{logs['loss']:.3f}")
                done_steps += 1
                every = cfg.train.save_every
                if every and (step + 1) % every == 0 and step + 1 < len(batches):
                    save(epoch, step + 1, sums)
                if stop_after is not None and done_steps >= stop_after:
                    raise Interrupted(f"stopped after {done_steps} steps")
            bar.close()
            for sch in schedulers:
                sch.step()
            row = epoch_row(stage, epoch, sums, optimizers, time.perf_counter() - t0)
            if dist.main and (
                (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == settings.epochs
            ):
                row.update({f"val_acc/{m}": a for m, a in validate(stage, device).items()})
            recorder.record(row)
            if dist.main:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
                tqdm.write(f"{stage.name} epoch {epoch + 1}/{settings.epochs}: {shown}")
            save(epoch + 1, 0, {})
    finally:
        recorder.close()
    distributed.barrier()


def epoch_row(
    stage: Stage, epoch: int, sums: dict, optimizers: list, seconds: float
) -> dict[str, Any]:
    steps = max(sums.get("steps", 0), 1)
    row: dict[str, Any] = {"epoch": epoch + 1}
    row.update({k: v / steps for k, v in sums.items() if k != "steps"})
    for i, o in enumerate(optimizers):
        row[f"lr{i}"] = o.param_groups[0]["lr"]
    if isinstance(stage.distiller, GraphDistillation):
        row["graph"] = stage.distiller.graph.value
    row["seconds"] = seconds
    return row


# --- stages --------------------------------------------------------------------------------


def run_stage(
    cfg: Config,
    workdir: Path,
    name: str,
    resume: bool = False,
    stop_after: int | None = None,
    dist: distributed.Dist | None = None,
) -> dict[str, Any]:
    """Train stage `name` ("pretrain" | "detect") and save its deployable checkpoints;
    returns its metrics. A finished stage (done.json) is not run again."""
    workdir = Path(workdir)
    done = workdir / name / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    dist = dist or distributed.setup(cfg.train.device, cfg.train.threads)
    t0 = time.perf_counter()
    phases = build_pretrain(cfg, workdir) if name == "pretrain" else build_detect(cfg, workdir)
    for stage in phases:
        fit(stage, cfg, dist, resume=resume, stop_after=stop_after)
    stage = phases[-1]
    metrics: dict[str, Any] = {}
    if dist.main:
        metrics["val_accuracy"] = validate(stage, dist.device)
        if stage.task == "classification":  # detection is tested by the evaluate stage
            metrics["test_accuracy"] = validate(
                stage, dist.device, D.subset_samples(stage.cache, "test")
            )
        for m in stage.modalities:  # the teachers too (student mode): each is deployable
            save_checkpoint(stage.out / f"{m}.pt", _checkpoint(stage, m, cfg, dict(metrics)))
        if cfg.train.graphs and isinstance(stage.distiller, GraphDistillation):
            from training.graph_plot import draw_stage_graphs

            draw_stage_graphs(stage, dist.device, workdir / "graphs" / name)
        metrics["seconds"] = time.perf_counter() - t0
        metrics["history"] = stage.history
        atomic_write_text(done, json.dumps(metrics, indent=1))
    distributed.barrier()
    return metrics


def run_evaluate(
    cfg: Config, workdir: Path, dist: distributed.Dist | None = None
) -> dict[str, Any]:
    """Test the detect stage's deployable model on the target's test videos with its test
    modality alone: per-clip accuracy and mAP at tIoU 0.1/0.3/0.5 through `core`, next to a
    trivial baseline; predictions in <workdir>/predictions/, figures in <workdir>/metrics.json
    (with the pretrain stage's classification figures) and in the checkpoint's metrics."""
    workdir = Path(workdir)
    dist = dist or distributed.setup(cfg.train.device, cfg.train.threads)
    if not dist.main:
        distributed.barrier()
        return {}
    modality = cfg.target.test_modality
    path = workdir / "detect" / f"{modality}.pt"
    if not path.is_file():
        raise TrainingError(f"{path}: no detection checkpoint; run gd-train detect first")
    ckpt = load_checkpoint(path)
    cache = open_cache(cfg.target.cache, workdir, "detect")
    test = D.subset_samples(cache, "test")
    spec, num_actions = ckpt.clip, ckpt.architecture.num_classes
    net = ckpt.network().to(dist.device)
    rows, probs = detect(
        net, cache, test, modality, spec, dist.device, cfg.target.activity_threshold
    )
    write_predictions(workdir / "predictions", rows)
    gt = ground_truth(cache, test)
    train, _ = D.split_samples(
        cache, cfg.target.mini, cfg.target.val_fraction, cfg.target.split_seed
    )
    lengths = {cache.samples[i].name: cache.samples[i].length for i in test}
    baseline = trivial_baseline(
        [gt_rows for gt_rows in ground_truth(cache, train).values()], lengths, spec, num_actions
    )
    detection = {
        "modality": modality,
        **map_figures(gt, rows, num_actions),
        "clip_accuracy": clip_accuracy(cache, probs, spec),
        "baseline": {"name": "trivial", **map_figures(gt, baseline, num_actions)},
    }
    # For reference, each other training modality's own detector on the same test videos
    # (what the privileged modalities know; never used at test time), and how often the
    # tested detector takes the same decision per clip (imitation should raise it).
    threshold = cfg.target.activity_threshold
    detectors = {modality: (net, spec)}
    for m in cfg.target.modalities:
        other = workdir / "detect" / f"{m}.pt"
        if m != modality and other.is_file():
            teacher = load_checkpoint(other)
            detectors[m] = (teacher.network().to(dist.device), teacher.clip)
    others, agree = {}, {}
    for m, (teacher_net, teacher_spec) in list(detectors.items())[1:]:
        r, p = detect(teacher_net, cache, test, m, teacher_spec, dist.device, threshold)
        others[m] = map_figures(gt, r, num_actions)["map_action"]
        agree[m] = agreement(probs, p)
    detection["other_modalities_map_action"] = others
    detection["agreement_with"] = agree
    # Every detector on its own training videos: a teacher that is right and sure on nearly
    # every training clip tells its student little that the labels do not (docs/results.md).
    detection["training_fit"] = {
        m: fit_figures(cache, detect(n, cache, train, m, s, dist.device, threshold)[1], s)
        for m, (n, s) in detectors.items()
    }
    metrics: dict[str, Any] = {"detection": detection}
    pretrain = workdir / "pretrain" / "done.json"
    if pretrain.exists():
        done = json.loads(pretrain.read_text())
        metrics["classification"] = {
            k: done[k] for k in ("test_accuracy", "val_accuracy") if k in done
        }
    detect_done = workdir / "detect" / "done.json"
    if detect_done.exists():
        metrics["detection"]["val_accuracy"] = json.loads(detect_done.read_text()).get(
            "val_accuracy"
        )
    ckpt.metrics = {**ckpt.metrics, "test": detection}
    save_checkpoint(path, ckpt)
    atomic_write_text(workdir / "metrics.json", json.dumps(metrics, indent=1))
    distributed.barrier()
    return metrics
