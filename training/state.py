"""What a training run leaves behind: the resume state and the deployable checkpoints.

`<stage>/state.pt` (`RunState`) is written atomically at every epoch end and every
`train.save_every` steps: networks, distiller, optimizers, schedulers, RNG states, position
in the epoch, metric history. A run continues from it only with `--resume` and only under
the same config (how it runs, `train.*`, may change). `<stage>/<modality>.pt` are the
deployable checkpoints (`training.checkpoint`), with their provenance.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.bundle import portable
from core.files import atomic_output
from training import distributed
from training.checkpoint import Checkpoint
from training.config import Config
from training.stages import Stage, TrainingError


@dataclass
class Position:
    """Where a run stands: the epoch, the next step in it, and the epoch's sums so far."""

    epoch: int = 0
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)


@dataclass
class RunState:
    """The live objects of a run that state.pt holds, and how they are saved and restored."""

    stage: Stage
    cfg: Config
    dist: distributed.Dist
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[torch.optim.lr_scheduler.LRScheduler]

    @property
    def path(self) -> Path:
        return self.stage.out / self.stage.state_name

    def modules(self) -> dict[str, nn.Module]:
        candidates = {"nets": self.stage.nets, "distiller": self.stage.distiller}
        return {k: v for k, v in candidates.items() if v is not None}

    def save(self, at: Position) -> None:
        """Write state.pt (rank 0 only: every rank holds the same state)."""
        if not self.dist.main:
            return
        state = {
            "epoch": at.epoch, "step": at.step, "sums": at.sums, "history": self.stage.history,
            "config": self.cfg.to_dict(), "rng": rng_state(),
            "modules": {k: v.state_dict() for k, v in self.modules().items()},
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
        }  # fmt: skip
        with atomic_output(self.path, suffix=".pt") as tmp:
            torch.save(state, tmp)

    def start(self, resume: bool) -> Position:
        """Restore state.pt if there is one (only with `resume`), else start fresh with
        every rank holding rank 0's initial weights."""
        if self.path.exists():
            if not resume:
                raise TrainingError(
                    f"{self.path} exists: pass --resume to continue that run, or use another "
                    "--workdir"
                )
            return self._restore()
        self.stage.out.mkdir(parents=True, exist_ok=True)
        for module in self.modules().values():
            distributed.broadcast_state(module)
        return Position()

    def _restore(self) -> Position:
        state = torch.load(self.path, map_location=self.dist.device, weights_only=False)
        changed = _differences(_comparable(state["config"]), _comparable(self.cfg.to_dict()))
        if changed:
            raise TrainingError(f"{self.path} was made with another config: {'; '.join(changed)}")
        for key, module in self.modules().items():
            module.load_state_dict(state["modules"][key])
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)
        for sch, s in zip(self.schedulers, state["schedulers"], strict=True):
            sch.load_state_dict(s)
        set_rng_state(state["rng"])
        self.stage.history = list(state["history"])
        return Position(state["epoch"], state["step"], state["sums"])


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


def deployable_checkpoint(stage: Stage, modality: str, cfg: Config, metrics: dict) -> Checkpoint:
    """The deployable network of one modality (no resume state: that is state.pt)."""
    names = stage.classes if stage.task == "classification" else ["background", *stage.classes]
    return Checkpoint(
        task=stage.task, architecture=stage.archs[modality], clip=stage.spec, classes=names,
        model={
            k: v.detach().cpu().contiguous() for k, v in stage.nets[modality].state_dict().items()
        },
        provenance=provenance(cfg, stage), metrics=metrics, state={},
    )  # fmt: skip
