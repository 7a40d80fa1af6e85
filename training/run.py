"""gd-train's stages end to end: `run_stage` trains a stage's phases and writes its
deployable checkpoints; `run_evaluate` tests the deployable detector.

A stage writes into `<workdir>/<stage>/`:

    <modality>.pt   deployable checkpoints (`training.checkpoint`), at the end
    state.pt        resume state (`training.state`), atomically at every epoch end and every
                    `train.save_every` steps
    metrics.csv     one row per epoch (`training.recorder`); TensorBoard events in tb/
    done.json       written last: the stage is finished and is skipped from then on
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from core.clip import ClipSpec
from core.files import atomic_write_text
from training import data as D
from training import distributed
from training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from training.config import Config
from training.distillation import GraphDistillation
from training.evaluate import (
    agreement,
    clip_accuracy,
    detect,
    fit_figures,
    ground_truth,
    map_figures,
    trivial_baseline,
    write_predictions,
)
from training.loop import fit
from training.stages import Stage, TrainingError, build_detect, build_pretrain, open_cache
from training.state import deployable_checkpoint
from training.validation import validate


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
    phases = build_pretrain(cfg, workdir) if name == "pretrain" else build_detect(cfg, workdir)
    return train_phases(cfg, workdir, phases, resume, stop_after, dist)


def train_phases(
    cfg: Config,
    workdir: Path,
    phases: list[Stage],
    resume: bool = False,
    stop_after: int | None = None,
    dist: distributed.Dist | None = None,
) -> dict[str, Any]:
    """Train a stage's phases, then save every modality's deployable checkpoint into the
    stage's folder and its metrics into done.json there; returns the metrics."""
    dist = dist or distributed.setup(cfg.train.device, cfg.train.threads)
    t0 = time.perf_counter()
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
            ckpt = deployable_checkpoint(stage, m, cfg, dict(metrics))
            save_checkpoint(stage.out / f"{m}.pt", ckpt)
        if cfg.train.graphs and isinstance(stage.distiller, GraphDistillation):
            # imported here: matplotlib is slow to import and only needed for the graphs
            from training.graph_plot import draw_stage_graphs

            draw_stage_graphs(stage, dist.device, workdir / "graphs" / stage.name)
        metrics["seconds"] = time.perf_counter() - t0
        metrics["history"] = stage.history
        atomic_write_text(stage.out / "done.json", json.dumps(metrics, indent=1))
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
    path = workdir / "detect" / f"{cfg.target.test_modality}.pt"
    if not path.is_file():
        raise TrainingError(f"{path}: no detection checkpoint; run gd-train detect first")
    ckpt = load_checkpoint(path)
    detection = detection_figures(cfg, workdir, ckpt, dist.device)
    metrics: dict[str, Any] = {"detection": detection}
    pretrain = workdir / "pretrain" / "done.json"
    if pretrain.exists():
        done = json.loads(pretrain.read_text())
        metrics["classification"] = {
            k: done[k] for k in ("test_accuracy", "val_accuracy") if k in done
        }
    detect_done = workdir / "detect" / "done.json"
    if detect_done.exists():
        detection["val_accuracy"] = json.loads(detect_done.read_text()).get("val_accuracy")
    ckpt.metrics = {**ckpt.metrics, "test": detection}
    save_checkpoint(path, ckpt)
    atomic_write_text(workdir / "metrics.json", json.dumps(metrics, indent=1))
    distributed.barrier()
    return metrics


def detection_figures(
    cfg: Config, workdir: Path, ckpt: Checkpoint, device: torch.device
) -> dict[str, Any]:
    """The test modality's detector `ckpt` on the test videos (its predictions written to
    <workdir>/predictions/), the trivial baseline, and the other modalities' detectors."""
    modality, threshold = cfg.target.test_modality, cfg.target.activity_threshold
    cache = open_cache(cfg.target.cache, workdir, "detect")
    test = D.subset_samples(cache, "test")
    spec, num_actions = ckpt.clip, ckpt.architecture.num_classes
    net = ckpt.network().to(device)
    rows, probs = detect(net, cache, test, modality, spec, device, threshold)
    write_predictions(workdir / "predictions", rows)
    gt = ground_truth(cache, test)
    train, _ = D.split_samples(
        cache, cfg.target.mini, cfg.target.val_fraction, cfg.target.split_seed
    )
    lengths = {cache.samples[i].name: cache.samples[i].length for i in test}
    baseline = trivial_baseline(
        list(ground_truth(cache, train).values()), lengths, spec, num_actions
    )
    detectors = {modality: (net, spec), **other_detectors(cfg, workdir, device)}
    # For reference, each other training modality's own detector on the same test videos
    # (what the privileged modalities know; never used at test time), and how often the
    # tested detector takes the same decision per clip (imitation should raise it).
    others, agree = {}, {}
    for m, (other_net, other_spec) in list(detectors.items())[1:]:
        r, p = detect(other_net, cache, test, m, other_spec, device, threshold)
        others[m] = map_figures(gt, r, num_actions)["map_action"]
        agree[m] = agreement(probs, p)
    # Every detector on its own training videos: a teacher that is right and sure on nearly
    # every training clip tells its student little that the labels do not (docs/results.md).
    training_fit = {
        m: fit_figures(cache, detect(n, cache, train, m, s, device, threshold)[1], s)
        for m, (n, s) in detectors.items()
    }
    return {
        "modality": modality,
        **map_figures(gt, rows, num_actions),
        "clip_accuracy": clip_accuracy(cache, probs, spec),
        "baseline": {"name": "trivial", **map_figures(gt, baseline, num_actions)},
        "other_modalities_map_action": others,
        "agreement_with": agree,
        "training_fit": training_fit,
    }


def other_detectors(
    cfg: Config, workdir: Path, device: torch.device
) -> dict[str, tuple[torch.nn.Module, ClipSpec]]:
    """The detect stage's detectors of the target's other training modalities, where saved."""
    found = {}
    for m in cfg.target.modalities:
        path = workdir / "detect" / f"{m}.pt"
        if m != cfg.target.test_modality and path.is_file():
            ckpt = load_checkpoint(path)
            found[m] = (ckpt.network().to(device), ckpt.clip)
    return found
