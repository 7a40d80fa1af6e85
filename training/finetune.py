"""`gd-train finetune`: retrain a deployed detector on a site's own recordings (issue 14;
docs/retraining.md, "4. Fine-tune").

1. The starting model: a bundle (its `weights.pt`, which gd-export writes beside the ONNX
   files) or a detection checkpoint; `models/default` unless told otherwise.
2. The class list: the model's actions in their order, then the site's classes (the prepared
   cache's meta.json `classes`) that the model lacks, in the site's order. A class the model
   has keeps its output row and its weights (matched by name); a new one gets a new row,
   freshly initialized. The cache's segment labels are renumbered to that list in memory.
3. The detect stage (`training.stages.build_detect`) on the site's training recordings, with
   the starting model's clip spec and architecture: the depth detector starts from the
   model's weights; where the cache holds colour, RGB and flow detectors (fresh: a bundle
   holds depth only) train beside it and teach it through the graph distillation layer.
4. mAP on the cache's `test` recordings before (the starting model) and after, printed and
   written to `<workdir>/finetune.json`; the model in `<workdir>/finetune/depth.pt`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.bundle import BundleError, load_bundle, portable, sha256_file, write_bundle_json
from core.clip import ClipSpec
from core.files import atomic_write_text
from training import data as D
from training import distributed
from training.cache import Cache, CacheError
from training.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from training.config import Config, validate
from training.evaluate import detect, ground_truth, map_figures
from training.run import train_phases
from training.stages import TrainingError, build_detect

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "default"
STAGE = "finetune"  # <workdir>/finetune/: the stage's checkpoints, state and metrics
REPORT = "finetune.json"
COLOUR = ("rgb", "flow")  # privileged modalities a site's cache may hold
CLASS_ROWS = ("sequence.fc.weight", "sequence.fc.bias")  # the parameters with a row per class
# What the cache's frames must share with the model (the rest of the clip spec is the model's).
SAME_FRAMES = ("height", "width", "fit", "source_fps", "downsample", "depth_min_mm", "depth_max_mm")


class FinetuneError(TrainingError):
    """Fine-tuning cannot start: the starting model, the cache or the class lists are wrong."""


@dataclass
class Start:
    """The starting model: its deployable checkpoint and the post-processing it served with."""

    ckpt: Checkpoint
    threshold: float
    score_delay: int
    source: str  # the bundle's name and version, or the checkpoint's path


def load_start(path: Path) -> Start:
    """A bundle folder (its weights.pt, checked against model.json) or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        try:
            bundle = load_bundle(path)
        except BundleError as e:
            raise FinetuneError(f"--from: {e}") from None
        entry = bundle.training.get("weights")
        if not isinstance(entry, dict):
            raise FinetuneError(
                f"--from {path}: the bundle holds no PyTorch weights (weights.pt; bundles "
                "exported before gd-export wrote them lack it): export it again from its "
                "checkpoint with gd-export onnx, or give --from CHECKPOINT"
            )
        weights = path / str(entry.get("path"))
        if not weights.is_file():
            raise FinetuneError(
                f"--from {path}: model.json names {weights.name}, which is missing (a "
                "quantized variant? fine-tune from the FP32 bundle it was made from)"
            )
        if sha256_file(weights) != entry.get("sha256"):
            raise FinetuneError(f"--from {path}: {weights.name} does not match its sha256")
        ckpt = _checkpoint(weights)
        start = Start(ckpt, bundle.activity_threshold, bundle.score_delay,
                      f"{bundle.name} {bundle.version}")  # fmt: skip
    elif path.is_file():
        ckpt = _checkpoint(path)
        from export.cli import trained_threshold  # the threshold export would give it

        start = Start(ckpt, trained_threshold(ckpt), 0, str(portable(str(path))))
    else:
        raise FinetuneError(f"--from {path}: no such bundle or checkpoint")
    arch = ckpt.architecture
    if ckpt.task != "detection" or arch.modality != "depth":
        raise FinetuneError(
            f"--from {path}: a {ckpt.task} model of {arch.modality}; fine-tuning needs a depth "
            "detector (a bundle, or gd-train detect's depth.pt)"
        )
    return start


def _checkpoint(path: Path) -> Checkpoint:
    try:
        return load_checkpoint(path)
    except CheckpointError as e:
        raise FinetuneError(f"--from: {e}") from None


def open_site_cache(path: Path, spec: ClipSpec) -> Cache:
    """The site's prepared cache, with frames of the model's size and rate, and with both
    training and test recordings."""
    try:
        cache = Cache(path)
    except CacheError as e:
        raise FinetuneError(f"--cache: {e}; prepare it with gd-prep --dataset recordings") from None
    clip = cache.meta["clip"]
    differ = [f"{k} {clip.get(k)} (model {getattr(spec, k)})" for k in SAME_FRAMES
              if clip.get(k) != getattr(spec, k)]  # fmt: skip
    if differ:
        raise FinetuneError(
            f"--cache {path}: its frames are not the model's: {', '.join(differ)}; prepare "
            f"it again with gd-prep --size {spec.height}x{spec.width}"
        )
    if "depth" not in cache.modalities:
        raise FinetuneError(f"--cache {path}: no depth (it has {cache.modalities})")
    for subset, hint in (
        ("test", "nothing to measure before and after on: give some recordings `subset` test in "
         "labels.csv, or prepare two or more recordings (gd-prep holds out 20 % as test)"),
        ("train", "nothing to train on: give some recordings `subset` train in labels.csv"),
    ):  # fmt: skip
        if not any(s.info.get("subset") == subset for s in cache.samples):
            raise FinetuneError(f"--cache {path}: no {subset} recordings; {hint}")
    return cache


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def extended_classes(model: list[str], site: list[str]) -> list[str]:
    """The action names (no background) of the fine-tuned model: `model`'s in order, then
    `site`'s new ones in order. Refuses a site list with "background" or a name twice, and a
    site name that differs from a model class only in case or spacing (a typo that would
    otherwise become a new class beside the old one)."""
    problems = []
    if any(_key(n) == "background" for n in site):
        problems.append("'background' is the model's row 0, not an action")
    twice = sorted({n for n in site if site.count(n) > 1})
    if twice:
        problems.append(f"listed twice: {twice}")
    known = {_key(n): n for n in model}
    near = [f"{n!r} (model: {known[_key(n)]!r})" for n in site
            if _key(n) in known and n not in model]  # fmt: skip
    if near:
        problems.append(
            f"differ from the model's classes only in case or spacing: {', '.join(near)}"
        )
    if problems:
        raise FinetuneError("class list conflict: " + "; ".join(problems))
    return list(model) + [n for n in site if n not in model]


def extend_class_rows(
    model: dict[str, torch.Tensor], old: list[str], new: list[str], fresh: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Weights of a detector over classes `new` from one over `old` (action names; row 0 is
    background in both): every parameter from `model`, except that the per-class rows of the
    output layer come from `model` for background and each old class (matched by name) and
    from `fresh` (a new network's initialization) for the new classes."""
    rows = [0] + [1 + new.index(n) for n in old]  # where each of model's rows goes
    out = {}
    for key, value in model.items():
        if key in CLASS_ROWS:
            extended = fresh[key].clone()
            extended[rows] = value
            out[key] = extended
        elif value.shape != fresh[key].shape:
            raise FinetuneError(
                f"{key}: shape {tuple(value.shape)}, want {tuple(fresh[key].shape)}"
            )
        else:
            out[key] = value
    return out


def relabel(cache: Cache, site: list[str], classes: list[str]) -> None:
    """Renumber the cache's segments (site class ids, 1-based) to `classes` ids, and make
    `classes` its class list, in memory (the files stay as gd-prep wrote them)."""
    ids = np.array([0] + [1 + classes.index(n) for n in site], np.float64)
    for s in cache.samples:
        segments = np.asarray(s.info["segments"], np.float64).reshape(-1, 4)
        segments[:, 0] = ids[segments[:, 0].astype(int)]
        s.info["segments"] = segments.tolist()
    cache.meta["classes"] = list(classes)


def configure(
    cfg: Config,
    start: Start,
    cache: Cache,
    modalities: list[str],
    classes: list[str],
    epochs: int | None,
) -> None:
    """The config of the fine-tuning run: the model's architecture and clip geometry, the
    site's cache and modalities, no source pre-training, the model's threshold."""
    arch, spec = start.ckpt.architecture, start.ckpt.clip
    cfg.model.width, cfg.model.hidden_size, cfg.model.causal = (
        arch.width, arch.hidden_size, arch.causal
    )  # fmt: skip
    cfg.clip.clip_len, cfg.clip.clip_step = spec.clip_len, spec.clip_step
    cfg.clip.window, cfg.clip.window_step = spec.window, spec.window_step
    cfg.transfer = False
    t = cfg.target
    t.cache, t.modalities, t.test_modality = str(cache.root), modalities, "depth"
    t.num_classes, t.activity_threshold = len(classes), start.threshold
    if epochs is not None:
        t.epochs = epochs
    validate(cfg)


def held_out_figures(
    net: nn.Module,
    cache: Cache,
    spec: ClipSpec,
    classes: list[str],
    threshold: float,
    device: torch.device,
) -> dict[str, Any]:
    """mAP (action and video) at tIoU 0.1/0.3/0.5 and AP per class (by name) of the depth
    detector `net` on the cache's test recordings, with the server's post-processing."""
    test = D.subset_samples(cache, "test")
    rows, _ = detect(net.to(device), cache, test, "depth", spec, device, threshold)
    fig = map_figures(ground_truth(cache, test), rows, len(classes))
    return {
        "map_action": fig["map_action"],
        "map_video": fig["map_video"],
        "ap_per_class": {t: dict(zip(classes, ap, strict=True))
                         for t, ap in fig["ap_per_class"].items()},
        "num_instances": fig["num_instances"],
        "num_proposals": fig["num_proposals"],
    }  # fmt: skip


def finetune(
    cfg: Config,
    start_path: Path,
    cache_path: Path,
    workdir: Path,
    modalities: list[str] | None = None,
    epochs: int | None = None,
    resume: bool = False,
    dist: distributed.Dist | None = None,
) -> dict[str, Any]:
    """Fine-tune the model at `start_path` on the site cache; returns (and writes to
    <workdir>/finetune.json) the class lists and the test figures before and after."""
    workdir = Path(workdir)
    start = load_start(start_path)
    spec = start.ckpt.clip
    cache = open_site_cache(cache_path, spec)
    site = cache.meta.get("classes") or D.class_names(cache, D.num_detection_classes(cache))
    old = start.ckpt.classes[1:]
    classes = extended_classes(old, site)
    relabel(cache, site, classes)
    modalities = modalities or ["depth"] + [m for m in COLOUR if m in cache.modalities]
    missing = [m for m in modalities if m not in cache.modalities]
    if missing or "depth" not in modalities:
        raise FinetuneError(
            f"--modalities {' '.join(modalities)}: depth, and only what the cache holds "
            f"({', '.join(cache.modalities)})"
        )
    configure(cfg, start, cache, modalities, classes, epochs)
    dist = dist or distributed.setup(cfg.train.device, cfg.train.threads)

    before = held_out_figures(
        start.ckpt.network(), cache, spec, classes, start.threshold, dist.device
    )
    phases = build_detect(cfg, workdir, cache=cache, spec=spec, name=STAGE)
    depth = phases[0].nets["depth"]
    depth.load_state_dict(extend_class_rows(start.ckpt.model, old, classes, depth.state_dict()))
    train_phases(cfg, workdir, phases, resume, dist=dist)
    if not dist.main:
        return {}
    tuned = phases[-1].nets["depth"]
    after = held_out_figures(tuned, cache, spec, classes, start.threshold, dist.device)
    new = [n for n in classes if n not in old]
    report = {
        "start": start.source,
        "cache": str(portable(str(cache.root))),
        "modalities": modalities,
        "epochs": cfg.target.epochs,
        "activity_threshold": start.threshold,
        "score_delay": start.score_delay,
        "classes": ["background", *classes],
        "new_classes": new,
        "test_recordings": [cache.samples[i].name for i in D.subset_samples(cache, "test")],
        "before": before,
        "after": after,
        "note": "before: the starting model, which has no output for the new classes: they "
        "score 0 there",
    }
    ckpt_path = workdir / STAGE / "depth.pt"
    ckpt = load_checkpoint(ckpt_path)
    ckpt.provenance["finetuned_from"] = start.source
    ckpt.metrics["finetune"] = {"before": before, "after": after}
    save_checkpoint(ckpt_path, ckpt)
    atomic_write_text(workdir / REPORT, json.dumps(report, indent=1))
    return report


def summary(report: dict[str, Any]) -> str:
    """The before/after lines `gd-train finetune` prints."""

    def maps(fig: dict) -> str:
        return " ".join(f"@{t} {v:.3f}" for t, v in fig["map_action"].items())

    tests = report["test_recordings"]
    lines = [f"test recordings ({len(tests)}): {', '.join(tests)}",
             f"mAP before: {maps(report['before'])}  ({report['start']})",
             f"mAP after:  {maps(report['after'])}"]  # fmt: skip
    if report["new_classes"]:
        lines.append(f"new classes: {', '.join(report['new_classes'])} (they score 0 before: "
                     "the starting model has no output for them)")  # fmt: skip
    return "\n".join(lines)


def export(
    workdir: Path, cache: Path, report: dict[str, Any], out: Path, overwrite: bool = False
) -> int:
    """`gd-export onnx` of the fine-tuned depth.pt into the bundle `out` (parity checked on
    the cache's test clips), with the starting model's threshold and score delay and the
    before/after figures in its metrics; returns gd-export's exit code. Its own mAP step is
    skipped: it scores cache labels as ids of the bundle's classes, and the cache numbers them
    by the site's list (the after figures are that measurement, through PyTorch)."""
    from export.cli import main as export_main

    argv = ["onnx", "--checkpoint", str(Path(workdir) / STAGE / "depth.pt"),
            "--cache", str(cache), "--out", str(out), "--no-evaluate",
            "--threshold", str(report["activity_threshold"]),
            "--score-delay", str(report["score_delay"])]  # fmt: skip
    argv += ["--overwrite"] if overwrite else []
    code = export_main(argv)
    if code == 0:
        bundle = load_bundle(out)
        figures = {k: report[k] for k in ("start", "test_recordings", "before", "after")}
        metrics = {**bundle.metrics, "finetune": figures}
        write_bundle_json(dataclasses.replace(bundle, metrics=metrics))
    return code
