"""The paper's ablations on the synthetic benchmark, at several seeds: `docs/results.md`.

    python -m training.ablations --caches runs/default --out runs/ablations --seeds 0 1 2

Table 3(b) varies the target stage's distillation graph; Table 4 varies where privileged
information (PIs: every training modality but depth) is used, in the source pre-training and
in the target stage. Every run is a plain `gd-train` command (printed, and kept in the run's
`command.txt`), so any row can be rerun by hand. Runs that finished (`metrics.json`) are
skipped, so an interrupted sweep resumes where it stopped. Seeds vary initialisation and
sampling; the benchmark data (the caches of one `gd-train pipeline` workdir) stay the same.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from core.files import atomic_write_text

THRESHOLDS = ("0.1", "0.3", "0.5")
AGREEMENT = "jjd"  # the teacher whose per-clip decisions the tables compare depth's with

# Source pre-trainings a row can transfer from: with the PIs (graph distillation over every
# source modality) or on depth alone.
PRETRAINS = {"pis": [], "depth": ["source.modalities=[depth]"]}
PRETRAIN_LABELS = {"pis": "src w/ PIs (graph distillation)", "depth": "src (depth alone)"}


@dataclass(frozen=True)
class Row:
    label: str
    pretrain: str | None  # a PRETRAINS key; None: no transfer
    overrides: tuple[str, ...] = ()


DEPTH_ONLY = "target.modalities=[depth]"
KL = ("distill.metric=kl", "distill.lambda_repr=0")  # soft targets at T = 8, logits only
TABLES: dict[str, list[Row]] = {
    "table3b": [
        Row("empty graph", "pis", ("distill.graph=empty",)),
        Row("uniform graph", "pis", ("distill.graph=uniform",)),
        Row("prior graph", "pis", ("distill.graph=prior",)),
        Row("learned graph", "pis", ("distill.graph=learned",)),
    ],
    "table4": [
        Row("trg only", None, (DEPTH_ONLY,)),
        Row("src + trg", "depth", (DEPTH_ONLY,)),
        Row("src w/ PIs + trg", "pis", (DEPTH_ONLY,)),
        Row("src + trg w/ PIs", "depth", ("distill.graph=learned",)),
        Row("src w/ PIs + trg w/ PIs", "pis", ("distill.graph=learned",)),
    ],
    # Why distillation helps little in `quick`: the weight of imitation (quick: the paper's / 10),
    # what is imitated and how, and joint training against frozen teachers.
    "diagnosis": [
        Row("lambda / 10 (quick)", "pis", ("distill.graph=learned",)),
        Row("lambda as the paper (10, 5)", "pis",
            ("distill.graph=learned", "distill.lambda_logit=10", "distill.lambda_repr=5")),
        Row("logits only (lambda = 1, 0)", "pis",
            ("distill.graph=learned", "distill.lambda_repr=0")),
        Row("logits only, the paper's weight (lambda = 10, 0)", "pis",
            ("distill.graph=learned", "distill.lambda_logit=10", "distill.lambda_repr=0")),
        Row("frozen teachers (student mode)", "pis",
            ("distill.graph=learned", "distill.mode=student")),
        Row("soft targets: KL at T = 8, logits only", "pis", ("distill.graph=learned", *KL)),
    ],
    # The diagnosis's finding (soft-target messages help) put to the graph ablation and to
    # Table 4's target-stage rows.
    "kl": [
        Row("empty graph", "pis", ("distill.graph=empty",)),
        *(Row(f"{g} graph, KL", "pis", (f"distill.graph={g}", *KL))
          for g in ("uniform", "prior", "learned")),
        Row("src + trg w/ PIs, KL", "depth", ("distill.graph=learned", *KL)),
    ],
}  # fmt: skip


def run_name(row: Row) -> str:
    """Rows with the same training share one run (Table 4's last row is Table 3(b)'s learned)."""
    parts = [f"from-{row.pretrain}" if row.pretrain else "no-transfer", *row.overrides]
    return "_".join(p.replace("distill.", "").replace("target.", "") for p in parts).translate(
        str.maketrans({"=": "-", "[": "", "]": "", ",": "-", " ": ""})
    )


def gd_train(stage: str, workdir: Path, overrides: list[str]) -> list[str]:
    # --resume: a run the sweep's interruption cut short continues from its last state.
    resume = ["--resume"] if stage != "evaluate" else []
    return [sys.executable, "-m", "training.cli", stage, *resume, "--preset", "quick",
            "--workdir", str(workdir), *overrides]  # fmt: skip


@dataclass
class Plan:
    """Every run of the sweep, as gd-train commands, in the order they can run."""

    caches: Path
    out: Path
    seeds: list[int]
    tables: list[str]
    target_mini: float
    threads: int
    extra: tuple[str, ...] = ()  # overrides for every run, before the rows' own

    def common(self, seed: int) -> list[str]:
        return [f"seed={seed}", f"source.cache={self.caches / 'cache' / 'ntu'}",
                f"target.cache={self.caches / 'cache' / 'pku'}", f"target.mini={self.target_mini}",
                f"train.threads={self.threads}", "train.progress=false", "train.graphs=false",
                *self.extra]  # fmt: skip

    def pretrain_dir(self, seed: int, kind: str) -> Path:
        return self.out / f"seed{seed}" / f"pretrain-{kind}"

    def run_dir(self, seed: int, row: Row) -> Path:
        return self.out / f"seed{seed}" / run_name(row)

    def rows(self) -> list[Row]:
        seen: dict[str, Row] = {}
        for table in self.tables:
            for row in TABLES[table]:
                seen.setdefault(run_name(row), row)
        return list(seen.values())

    def pretrain_kinds(self) -> list[str]:
        return sorted({r.pretrain for r in self.rows() if r.pretrain})

    def pretrains(self) -> list[tuple[Path, list[list[str]]]]:
        return [
            (d := self.pretrain_dir(s, k), [gd_train("pretrain", d, self.common(s) + PRETRAINS[k])])
            for s in self.seeds
            for k in self.pretrain_kinds()
        ]

    def detections(self) -> list[tuple[Path, list[list[str]]]]:
        jobs = []
        for s in self.seeds:
            for row in self.rows():
                extra = list(row.overrides)
                if row.pretrain:
                    extra.append(f"transfer_from={self.pretrain_dir(s, row.pretrain) / 'pretrain'}")
                else:
                    extra.append("transfer=false")
                d = self.run_dir(s, row)
                args = self.common(s) + extra
                jobs.append((d, [gd_train("detect", d, args), gd_train("evaluate", d, args)]))
        return jobs


def finished(workdir: Path) -> bool:
    return (workdir / "metrics.json").exists() or (workdir / "pretrain" / "done.json").exists()


def run_command(cmd: list[str], log: IO[str]) -> int:
    """One gd-train command in a process of its own, its output appended to `log`; its exit
    status. (A hook: tests run the same argv through `training.cli.main` in their process.)"""
    return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode


def execute(workdir: Path, commands: list[list[str]]) -> float:
    """Run one job's commands in turn (logged to workdir/log.txt); seconds taken."""
    workdir.mkdir(parents=True, exist_ok=True)
    shown = "".join("python " + " ".join(c[1:]) + "\n" for c in commands)
    atomic_write_text(workdir / "command.txt", shown)
    t0 = time.perf_counter()
    with open(workdir / "log.txt", "a") as log:
        for cmd in commands:
            if run_command(cmd, log) != 0:
                raise RuntimeError(f"{' '.join(cmd[1:])} failed; see {workdir / 'log.txt'}")
    return time.perf_counter() - t0


def run_all(jobs: list[tuple[Path, list[list[str]]]], parallel: int) -> None:
    todo = [(d, c) for d, c in jobs if not finished(d)]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} done already; running {len(todo)}", flush=True)

    t0, finished_runs = time.perf_counter(), itertools.count(1)

    def one(job: tuple[Path, list[list[str]]]) -> None:
        d, commands = job
        print(f"start {d}", flush=True)
        seconds = execute(d, commands)
        k, elapsed = next(finished_runs), time.perf_counter() - t0
        left = elapsed / k * (len(todo) - k)  # runs take about the same time
        print(f"done  {d} in {seconds:.0f} s [{k}/{len(todo)}, about {left / 60:.0f} min left]",
              flush=True)  # fmt: skip

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, todo))


# --- summary ---------------------------------------------------------------------------------


def figures(workdir: Path) -> dict[str, float]:
    det = json.loads((workdir / "metrics.json").read_text())["detection"]
    out = {t: 100 * det["map_action"][t] for t in THRESHOLDS}
    out["clip_accuracy"] = 100 * det["clip_accuracy"]
    out["trivial@0.5"] = 100 * det["baseline"]["map_action"]["0.5"]
    for m, a in det.get("agreement_with", {}).items():
        out[f"agreement/{m}"] = 100 * a
    for m, fit in det.get("training_fit", {}).items():
        out[f"train_accuracy/{m}"] = 100 * fit["clip_accuracy"]
        out[f"train_top_probability/{m}"] = 100 * fit["mean_top_probability"]
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarize(plan: Plan) -> dict[str, list[dict]]:
    """Per table and row: each seed's figures, and their mean and std."""
    summary: dict[str, list[dict]] = {}
    for table in plan.tables:
        rows = []
        for row in TABLES[table]:
            runs = {s: plan.run_dir(s, row) for s in plan.seeds}
            per_seed = {s: figures(d) for s, d in runs.items() if (d / "metrics.json").exists()}
            keys = set.intersection(*(set(f) for f in per_seed.values())) if per_seed else ()
            stats = {k: mean_std([f[k] for f in per_seed.values()]) for k in keys}
            rows.append({"row": row.label, "run": run_name(row), "seeds": sorted(per_seed),
                         "per_seed": per_seed, "mean_std": stats})  # fmt: skip
        summary[table] = rows
    return summary


def source_summary(plan: Plan) -> list[dict]:
    """The source classifiers each pre-training gave: depth's test accuracy per seed."""
    rows = []
    for kind in plan.pretrain_kinds():
        per_seed = {}
        for s in plan.seeds:
            done = plan.pretrain_dir(s, kind) / "pretrain" / "done.json"
            if done.exists():
                per_seed[s] = 100 * json.loads(done.read_text())["test_accuracy"]["depth"]
        stats = mean_std(list(per_seed.values())) if per_seed else None
        rows.append({"pretrain": kind, "per_seed": per_seed, "mean_std": stats})
    return rows


COLUMNS = {  # figure key: column title
    "0.1": "mAP@0.1", "0.3": "mAP@0.3", "0.5": "mAP@0.5", "clip_accuracy": "clip accuracy",
    f"agreement/{AGREEMENT}": f"same clip decision as {AGREEMENT}",
}  # fmt: skip
FIT_COLUMNS = {
    "train_accuracy/depth": "depth: training clip accuracy",
    "clip_accuracy": "depth: test clip accuracy",
    f"train_accuracy/{AGREEMENT}": f"{AGREEMENT}: training clip accuracy",
    f"train_top_probability/{AGREEMENT}": f"{AGREEMENT}: mean top probability (training)",
}


def markdown(rows: list[dict], columns: dict[str, str] = COLUMNS) -> str:
    lines = ["| row | " + " | ".join(columns.values()) + " | seeds |", "|---" * (len(columns) + 2)
             + "|"]  # fmt: skip
    for r in rows:
        stats = r["mean_std"]
        shown = "{0:.1f} ± {1:.1f}" if len(r["seeds"]) > 1 else "{0:.1f}"  # one seed: no spread
        cells = [shown.format(*stats[k]) if k in stats else "" for k in columns]
        lines.append(f"| {r['row']} | " + " | ".join(cells) + f" | {len(r['seeds'])} |")
    return "\n".join(lines)


def plot(summary: dict[str, list[dict]], path: Path) -> None:
    """mAP@0.5 per row with one dot per seed: the spread is the point of the picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(2, len(summary))
    rows_ = -(-len(summary) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(6.5 * cols, 4.8 * rows_), squeeze=False)
    for ax in axes.flat[len(summary) :]:
        ax.set_visible(False)
    for ax, (table, rows) in zip(axes.flat, summary.items(), strict=False):
        for i, r in enumerate(rows):
            vals = [f["0.5"] for f in r["per_seed"].values()]
            if vals:
                ax.bar(i, np.mean(vals), color="#9ecae1")
                ax.scatter([i] * len(vals), vals, color="#08519c", s=12, zorder=3)
        ax.set_xticks(range(len(rows)), [r["row"] for r in rows], rotation=30, ha="right")
        ax.set_ylabel("test mAP@0.5 on depth (%)")
        ax.set_title(table)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.ablations",
        description="Run the paper's Table 3(b) (distillation graphs) and Table 4 (where "
        "privileged information is used) on gd-synth data at several seeds with the quick "
        "preset, then print mean ± std tables (markdown) and write summary.json and a plot.",
    )
    p.add_argument("--caches", type=Path, required=True,
                   help="a gd-train pipeline workdir whose cache/ntu and cache/pku to use "
                   "(e.g. runs/default after `make default-model`)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="sweep folder (one run per row/seed)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tables", nargs="+", choices=list(TABLES), default=["table3b", "table4"])
    p.add_argument("--target-mini", type=float, default=1.0,
                   help="fraction of the target's training videos kept (default: all, "
                   "which is about mini-PKU-MMD's size: docs/results.md)")  # fmt: skip
    p.add_argument("--parallel", type=int, default=2, help="runs at once (one thread each)")
    p.add_argument("--set", nargs="+", default=[], metavar="key=value",
                   help="gd-train overrides for every run (e.g. target.epochs=30)")  # fmt: skip
    p.add_argument("--summarize-only", action="store_true", help="tables from finished runs")
    p.add_argument("--plot", type=Path, help="also draw mAP@0.5 per row and seed to this PNG")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for layout in ("ntu", "pku"):
        if not (args.caches / "cache" / layout / "meta.json").exists():
            cache = args.caches / "cache" / layout
            hint = "run `gd-train pipeline --preset quick --workdir DIR` first"
            print(f"ablations: error: {cache} is not a gd-prep cache; {hint}", file=sys.stderr)
            return 2
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    extra = tuple(args.set)
    plan = Plan(args.caches, args.out, args.seeds, args.tables, args.target_mini, threads, extra)
    if not args.summarize_only:
        run_all(plan.pretrains(), args.parallel)
        run_all(plan.detections(), args.parallel)
    summary = summarize(plan)
    source = source_summary(plan)
    atomic_write_text(args.out / "summary.json", json.dumps({**summary, "source": source}))
    print("\n## source pre-training: test accuracy (%) of the depth classifier, mean ± std\n")
    for r in source:
        if r["mean_std"]:
            m, sd = r["mean_std"]
            n = len(r["per_seed"])
            print(f"- {PRETRAIN_LABELS[r['pretrain']]}: {m:.1f} ± {sd:.1f} ({n} seeds)")
    for table, rows in summary.items():
        print(f"\n## {table} (target.mini={args.target_mini}, test on depth, mean ± std)\n")
        print(markdown(rows))
        print("\nHow each run's detectors fit their training videos (%):\n")
        print(markdown(rows, FIT_COLUMNS))
    if args.plot:
        plot(summary, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
