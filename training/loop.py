"""The training loop of one stage (`fit`), in the order a step and an epoch happen.

A step: forward every modality, loss (`training.loss`), backward, gradients averaged across
ranks, optimizer steps. An epoch: the curriculum's graph (`begin_epoch`), the steps, the
schedulers, validation every `train.eval_every` epochs, the metrics row (`training.recorder`),
state.pt (`training.state`). Each rank trains on its shard of the same global batches, so
every rank holds the same weights and rank 0 alone writes files.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor
from tqdm import tqdm

from training import data as D
from training import distributed
from training.config import Config
from training.distillation import GraphDistillation
from training.loss import compute_loss
from training.recorder import Recorder, epoch_row
from training.stages import Stage
from training.state import Position, RunState
from training.validation import validate


class Interrupted(RuntimeError):
    """Raised by the `stop_after` hook (tests of resuming)."""


def fit(
    stage: Stage,
    cfg: Config,
    dist: distributed.Dist,
    resume: bool = False,
    stop_after: int | None = None,
) -> None:
    """Train `stage` for its epochs, or continue it from its state file; `stop_after` steps
    (of this call) raise `Interrupted`."""
    settings = stage.settings
    place(stage, dist)
    optimizers = make_optimizers(stage)
    schedulers = [
        torch.optim.lr_scheduler.MultiStepLR(o, settings.lr_steps, settings.lr_gamma)
        for o in optimizers
    ]
    run = RunState(stage, cfg, dist, optimizers, schedulers)
    at = run.start(resume)
    if at.epoch >= settings.epochs:
        return
    batches = D.EpochBatches(
        len(stage.train_set), settings.batch_size, cfg.seed, dist.rank, dist.world
    )
    recorder = Recorder(stage, dist.main, at.epoch)
    done = 0
    try:
        for epoch in range(at.epoch, settings.epochs):
            begin_epoch(stage, epoch, dist.device, fresh=at.step == 0)
            t0 = time.perf_counter()
            done = train_epoch(run, batches, at, done, stop_after)
            for sch in schedulers:
                sch.step()
            row = epoch_row(stage, epoch, at.sums, optimizers, time.perf_counter() - t0)
            last = epoch + 1 == settings.epochs
            if dist.main and ((epoch + 1) % cfg.train.eval_every == 0 or last):
                row.update({f"val_acc/{m}": a for m, a in validate(stage, dist.device).items()})
            recorder.record(row)
            if dist.main:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
                tqdm.write(f"{stage.name} epoch {epoch + 1}/{settings.epochs}: {shown}")
            at = Position(epoch + 1)
            run.save(at)
    finally:
        recorder.close()
    distributed.barrier()


def train_epoch(
    run: RunState, batches: D.EpochBatches, at: Position, done: int, stop_after: int | None
) -> int:
    """The steps of epoch `at.epoch` from step `at.step`, each step's logs added to `at.sums`,
    state.pt every `train.save_every` steps. Returns `done` plus the steps taken; raises
    `Interrupted` when that reaches `stop_after`."""
    stage, cfg, dist = run.stage, run.cfg, run.dist
    for m in stage.nets:
        stage.nets[m].train(m in stage.trained)
    params = [p for o in run.optimizers for g in o.param_groups for p in g["params"]]
    bar = tqdm(
        total=len(batches), initial=at.step, unit="batch", leave=False,
        desc=f"{stage.name} {at.epoch + 1}/{stage.settings.epochs}",
        disable=not (dist.main and cfg.train.progress),
    )  # fmt: skip
    shards = batches.shards(at.epoch, at.step)
    for step, batch in enumerate(D.loader(stage.train_set, shards, cfg.train.workers), at.step):
        logs = train_step(stage, run.optimizers, params, D.to_device(batch, dist.device))
        for k, v in logs.items():
            at.sums[k] = at.sums.get(k, 0.0) + v
        at.sums["steps"] = at.sums.get("steps", 0) + 1
        bar.update()
        bar.set_postfix(loss=f"{logs['loss']:.3f}")
        done += 1
        every = cfg.train.save_every
        if every and (step + 1) % every == 0 and step + 1 < len(batches):
            run.save(Position(at.epoch, step + 1, at.sums))
        if stop_after is not None and done >= stop_after:
            raise Interrupted(f"stopped after {done} steps")
    bar.close()
    return done


def train_step(
    stage: Stage, optimizers: list[torch.optim.Optimizer], params: list[Tensor], batch: dict
) -> dict[str, float]:
    """One optimization step on a global batch; returns the step's logged values."""
    loss, logs = compute_loss(stage, batch)
    for o in optimizers:
        o.zero_grad(set_to_none=True)
    loss.backward()
    distributed.average_gradients(params)
    for o in optimizers:
        o.step()
    return logs


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
