"""Per-epoch metrics of a stage: the row of an epoch, metrics.csv and TensorBoard.

metrics.csv is rewritten whole from the stage's history at every epoch, so that a resumed
run's file equals an unbroken run's; TensorBoard events go to tb/.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from core.files import atomic_write_text
from training.distillation import GraphDistillation
from training.stages import Stage


def epoch_row(
    stage: Stage, epoch: int, sums: dict, optimizers: list, seconds: float
) -> dict[str, Any]:
    """The metrics of an epoch: the mean of each logged value over its steps, each
    optimizer's learning rate, the curriculum's graph and the epoch's duration."""
    steps = max(sums.get("steps", 0), 1)
    row: dict[str, Any] = {"epoch": epoch + 1}
    row.update({k: v / steps for k, v in sums.items() if k != "steps"})
    for i, o in enumerate(optimizers):
        row[f"lr{i}"] = o.param_groups[0]["lr"]
    if isinstance(stage.distiller, GraphDistillation):
        row["graph"] = stage.distiller.graph.value
    row["seconds"] = seconds
    return row


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
