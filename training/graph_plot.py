"""The learned distillation graph per class, drawn like the paper's Fig. 4.

For every validation example (a clip for classification, each clip of non-overlapping
windows for detection) the layer's example-specific graph G (Eq. 6-7: per student a
distribution over its teachers, without the constant prior c) is averaged over the
examples of each class. Each class gets `<folder>/<id>_<name>.png`: the graph (arrow
teacher -> student, width by weight) and the same weights as a table; `graphs.json` holds
the numbers and the prior.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch

from core.files import atomic_output, atomic_write_text
from training import data as D
from training.evaluate import grid_labels
from training.stages import Stage


def _edges(stage: Stage, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """G `[S, M, N]` of a batch of examples, every modality's network in eval mode."""
    logits, reprs = zip(*(stage.nets[m](inputs[m]) for m in stage.modalities), strict=True)
    return stage.distiller.edges(list(logits), list(reprs)).cpu().numpy()


@torch.inference_mode()
def class_graphs(
    stage: Stage, device: torch.device, samples: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean G per class `[C, S, M]` and the number of examples of each class `[C]`
    (detection: C = L + 1, index 0 = background)."""
    modes = {m: net.training for m, net in stage.nets.items()}
    stage.nets.eval()
    n_classes = len(stage.classes) + (stage.task == "detection")
    sums = np.zeros((n_classes, len(stage.distiller.students), len(stage.modalities)))
    counts = np.zeros(n_classes, dtype=np.int64)

    def add(g: np.ndarray, labels: np.ndarray) -> None:
        np.add.at(sums, labels, g.transpose(2, 0, 1))
        np.add.at(counts, labels, 1)

    if stage.task == "classification":
        clips = D.ClassificationClips(
            stage.cache, samples, stage.modalities, stage.spec, train=False
        )
        for first in range(0, len(clips), 16):  # 16 samples x 5 clips a forward
            items = [clips[i] for i in range(first, min(first + 16, len(clips)))]
            inputs = {
                m: torch.from_numpy(np.concatenate([it["inputs"][m] for it in items])).to(device)
                for m in stage.modalities
            }
            labels = np.repeat(
                [it["label"] for it in items], len(items[0]["inputs"][stage.modalities[0]])
            )
            add(_edges(stage, inputs), labels)
    else:
        t_w = stage.spec.window
        norms = {m: D.Normalizer(stage.cache, m, stage.spec) for m in stage.modalities}
        for i in samples:
            clips = {m: D.video_inputs(stage.cache, i, n, stage.spec) for m, n in norms.items()}
            n_windows = len(clips[stage.modalities[0]]) // t_w
            if n_windows == 0:
                continue
            inputs = {
                m: torch.from_numpy(x[: n_windows * t_w].reshape(n_windows, t_w, *x.shape[1:])).to(
                    device
                )
                for m, x in clips.items()
            }
            labels = grid_labels(stage.cache, i, stage.spec, n_windows * t_w)
            add(_edges(stage, inputs), labels)
    for m, training in modes.items():
        stage.nets[m].train(training)
    return sums / np.maximum(counts, 1)[:, None, None], counts


def draw_graph(
    weights: np.ndarray, modalities: list[str], students: list[str], title: str, path: Path
) -> None:
    """One class: `weights[s, j]` from teacher j to student s, as a graph and a table."""
    fig, (ax, tab) = plt.subplots(1, 2, figsize=(10, 4.6), gridspec_kw={"width_ratios": [1.2, 1]})
    fig.suptitle(title, fontsize=12)
    angle = np.pi / 2 - 2 * np.pi * np.arange(len(modalities)) / len(modalities)
    xy = {m: (np.cos(a), np.sin(a)) for m, a in zip(modalities, angle, strict=True)}
    top = max(float(weights.max()), 1e-9)
    for s, student in enumerate(students):
        for j, teacher in enumerate(modalities):
            if teacher == student:
                continue
            w = weights[s, j] / top
            ax.add_patch(
                FancyArrowPatch(
                    xy[teacher],
                    xy[student],
                    arrowstyle="-|>",
                    mutation_scale=10 + 10 * w,
                    connectionstyle="arc3,rad=0.15",
                    shrinkA=22,
                    shrinkB=22,
                    linewidth=0.5 + 5 * w,
                    color=plt.cm.viridis(0.15 + 0.75 * w),
                    alpha=0.3 + 0.7 * w,
                )
            )
    for m, (x, y) in xy.items():
        ax.add_patch(
            plt.Circle((x, y), 0.2, color="#fde9c9" if m in students else "#dddddd", zorder=3)
        )
        ax.text(x, y, m, ha="center", va="center", fontsize=10, zorder=4)
    ax.set_xlim(-1.35, 1.35)
    ax.set_ylim(-1.35, 1.35)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("teacher → student (width: weight)", fontsize=9)

    tab.imshow(weights, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    tab.set_xticks(range(len(modalities)), modalities)
    tab.set_yticks(range(len(students)), students)
    tab.set_xlabel("teacher")
    tab.set_ylabel("student")
    for s in range(len(students)):
        for j in range(len(modalities)):
            own = modalities[j] == students[s]
            text, color = (
                ("–", "grey")
                if own
                else (f"{weights[s, j]:.2f}", "black" if weights[s, j] > 0.6 else "white")
            )
            tab.text(j, s, text, ha="center", va="center", color=color, fontsize=9)
    tab.set_title("G, mean over the class's examples", fontsize=9)
    fig.tight_layout()
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def draw_stage_graphs(stage: Stage, device: torch.device, folder: Path) -> list[Path]:
    """Per-class PNGs and graphs.json for a stage trained with a graph distiller, over its
    validation samples (its test samples when it has none)."""
    samples = stage.val or D.subset_samples(stage.cache, "test")
    graphs, counts = class_graphs(stage, device, samples)
    names = (
        list(stage.classes) if stage.task == "classification" else ["background", *stage.classes]
    )
    first_id = 1 if stage.task == "classification" else 0  # class ids as in the dataset
    students = [stage.modalities[k] for k in stage.distiller.students]
    paths, record = [], {}
    for c, name in enumerate(names):
        if counts[c] == 0:
            continue
        title = f"{stage.name}: class {c + first_id} '{name}' ({counts[c]} examples)"
        path = folder / f"{c + first_id:02d}_{_slug(name)}.png"
        draw_graph(graphs[c], stage.modalities, students, title, path)
        paths.append(path)
        record[name] = {"examples": int(counts[c]), "graph": graphs[c].tolist()}
    prior = stage.distiller.prior().cpu().tolist()
    meta = {"modalities": stage.modalities, "students": students, "prior": prior, "classes": record}
    atomic_write_text(folder / "graphs.json", json.dumps(meta, indent=1))
    return paths
