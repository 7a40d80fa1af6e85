"""`gd-train`: train the depth-only detector with graph distillation (design.md §5, §11).

    gd-train pretrain  --preset quick --workdir runs/a [key=value ...]   source classification
    gd-train detect    --preset quick --workdir runs/a                   target detection
    gd-train evaluate  --preset quick --workdir runs/a                   test on depth alone
    gd-train pipeline  --preset quick --workdir runs/a                   all of it on gd-synth data
    gd-train finetune  --cache cache/site --workdir runs/ft [--from models/default]
                                                                         a model on a site's data
    gd-train show-config --preset paper [key=value ...]                  the resolved config

The same command under `torchrun --nproc_per_node=N -m training.cli ...` trains with N
data-parallel processes (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from core.files import atomic_write_text
from training import distributed
from training.config import PRESETS, Config, ConfigError, config_size, load_config
from training.evaluate import other_config_than_trained
from training.run import run_evaluate, run_stage
from training.stages import STAGES, TrainingError

PRESET_HELP = (
    "presets: 'paper' keeps the paper's hyper-parameters (width 64, 224x224 input, sequence "
    "GRU 512, 200 classification / 400 detection epochs, SGD 1e-2 decayed at 125/175, "
    "detection SGD 1e-3 + Adam 1e-3, TV-L1 flow, all six modalities; for GPUs). 'quick' is a "
    "CPU smoke run of the whole method in minutes and shrinks: width 16, 64x64 input, sequence "
    "GRU 128, a few epochs, a few hundred synthetic samples and a few videos, fewer "
    "modalities, Farneback flow, higher learning rates; its numbers are not the paper's."
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gd-train",
        description=(
            "Train action classification on the source (NTU RGB+D layout) and action "
            "detection on the target (PKU-MMD layout) with graph distillation over the "
            "training modalities, then test the detector on depth alone."
        ),
        epilog=PRESET_HELP
        + " Overrides: trailing key=value pairs with dotted keys, values in YAML, e.g. "
        "distill.graph=uniform source.modalities=[depth] target.mini=0.25 transfer=false.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--preset", choices=PRESETS, help="start from a preset (see below)")
    common.add_argument("--config", type=Path, help="YAML file applied after the preset")
    common.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("--workdir", type=Path, required=True, help="run folder (stages write here)")
    run.add_argument(
        "--resume", action="store_true", help="continue an interrupted stage from its state.pt"
    )
    helps = {
        "pretrain": "classification on the source cache (default <workdir>/cache/ntu)",
        "detect": "detection on the target cache (default <workdir>/cache/pku), encoders "
        "transferred from <workdir>/pretrain",
        "evaluate": "test <workdir>/detect/<test modality>.pt; writes <workdir>/metrics.json",
        "pipeline": "gd-synth data and gd-prep caches (if absent), then pretrain, detect, "
        "evaluate; finished stages are skipped, an interrupted one resumes",
    }
    stages = {
        name: sub.add_parser(
            name, parents=[common, run], help=text, description=text, epilog=PRESET_HELP
        )
        for name, text in helps.items()
    }
    stages["evaluate"].add_argument(
        "--force",
        action="store_true",
        help="evaluate even with a target config other than the detector was trained with, "
        "overwriting its metrics",
    )
    add_finetune(sub, common, run)
    sub.add_parser(
        "show-config", parents=[common], help="print the resolved config", epilog=PRESET_HELP
    )
    return p


FINETUNE_HELP = (
    "fine-tune a model (a bundle or a detection checkpoint; models/default by default) on a "
    "site's recordings prepared by gd-prep --dataset recordings: its classes are kept and the "
    "site's new ones added, colour (rgb, flow) teaches depth through graph distillation where "
    "the cache holds it, and mAP on the cache's test recordings is reported before and after"
)
FINETUNE_EPILOG = (
    "Writes <workdir>/finetune/depth.pt (a checkpoint gd-export reads) and "
    "<workdir>/finetune.json (classes, test figures before and after). Settings: the quick "
    "preset's target.* (learning rates, batch, distillation weights) unless --preset, --config "
    "or key=value overrides say otherwise; model.* and clip.* are the starting model's. "
    "Exit status: 0 done; 1 the export failed; 2 bad input (no such model, a cache at another "
    "size, no test recordings, a class list conflict). Example: gd-train finetune --cache "
    "cache/site --workdir runs/ft --epochs 5 --export models/site"
)


def add_finetune(sub: Any, common: argparse.ArgumentParser, run: argparse.ArgumentParser) -> None:
    from training.finetune import DEFAULT_MODEL

    f = sub.add_parser(
        "finetune", parents=[common, run], help=FINETUNE_HELP, description=FINETUNE_HELP,
        epilog=FINETUNE_EPILOG,
    )  # fmt: skip
    f.add_argument(
        "--from", dest="start", type=Path, default=DEFAULT_MODEL, metavar="MODEL",
        help="bundle folder (with weights.pt) or detection checkpoint (default models/default)",
    )  # fmt: skip
    f.add_argument(
        "--cache", type=Path, required=True, help="the site's cache (gd-prep --dataset recordings)"
    )
    f.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    f.add_argument(
        "--modalities", nargs="+", choices=("depth", "rgb", "flow"), metavar="M",
        help="training modalities, depth among them (default: depth, and rgb and flow where "
        "the cache holds them)",
    )  # fmt: skip
    f.add_argument(
        "--export", type=Path, metavar="DIR",
        help="then write the fine-tuned model as a bundle to DIR (gd-export onnx)",
    )  # fmt: skip
    f.add_argument("--overwrite", action="store_true", help="replace a non-empty --export DIR")


def generate_data(cfg: Config, workdir: Path) -> dict[str, float]:
    """gd-synth trees and gd-prep caches under <workdir>, each skipped when complete."""
    from synth import cli as synth_cli
    from synth.formats import SYNTH_MARKER
    from training.prep import PrepSettings, prepare

    seconds: dict[str, float] = {}
    size = "x".join(map(str, config_size("synth.size", cfg.synth.size)))
    jobs = {
        "ntu": ("classification", "--samples", cfg.synth.samples, cfg.source.modalities),
        "pku": ("detection", "--videos", cfg.synth.videos, cfg.target.modalities),
    }
    if not cfg.transfer:  # no pre-training, no source data
        del jobs["ntu"]
    actions = ["--actions", *map(str, cfg.synth.actions)]
    difficulty = [] if cfg.synth.difficulty is None else ["--difficulty", str(cfg.synth.difficulty)]
    camera = [] if cfg.synth.camera is None else ["--camera", cfg.synth.camera]
    for layout, (kind, flag, count, modalities) in jobs.items():
        root, cache = workdir / "data" / layout, workdir / "cache" / layout
        t0 = time.perf_counter()
        if not (root / SYNTH_MARKER).exists():
            # Skeletons are always written; render only the image modalities training reads.
            images = ["depth"] if "depth" in modalities else []
            images += ["rgb"] if {"rgb", "flow"} & set(modalities) else []
            argv = [kind, "--out", str(root), flag, str(count), "--seed", str(cfg.synth.seed),
                    "--size", size, "--color-size", size, "--workers", str(cfg.prep.workers),
                    *(["--modalities", *images] if images else []), *difficulty,
                    *(actions if kind == "detection" else []), *camera]  # fmt: skip
            if synth_cli.main(argv) != 0:
                raise TrainingError(f"gd-synth {' '.join(argv)} failed")
            seconds[f"synth_{layout}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        h, w = config_size("prep.size", cfg.prep.size)
        settings = PrepSettings(
            dataset=layout, root=str(root.resolve()), modalities=tuple(modalities),
            height=h, width=w, flow=cfg.prep.flow, fit=cfg.prep.fit,
            person_crop=cfg.prep.person_crop,
            split="xsub" if layout == "ntu" else "cross-subject",
        )  # fmt: skip
        # A complete cache made with other prep settings (prep.person_crop changed) is an
        # error naming them, never silently reused.
        done = prepare(settings, cache, workers=cfg.prep.workers, progress=cfg.train.progress)
        if done["status"] != "complete":
            seconds[f"prep_{layout}"] = time.perf_counter() - t0
    return seconds


def pipeline(cfg: Config, workdir: Path, dist: distributed.Dist) -> dict:
    """Everything from data to metrics.json; resumable stage by stage."""
    workdir.mkdir(parents=True, exist_ok=True)
    timing_path = workdir / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}

    def timed(name: str, fn) -> object:
        t0 = time.perf_counter()
        out = fn()
        if dist.main:
            timing[name] = timing.get(name, 0.0) + time.perf_counter() - t0
            atomic_write_text(timing_path, json.dumps(timing, indent=1))
        return out

    if dist.main:
        timing.update(timed("data", lambda: generate_data(cfg, workdir)) or {})
    distributed.barrier()
    if cfg.transfer:
        timed("pretrain", lambda: run_stage(cfg, workdir, "pretrain", resume=True, dist=dist))
    timed("detect", lambda: run_stage(cfg, workdir, "detect", resume=True, dist=dist))
    done, detected = workdir / "metrics.json", workdir / "detect" / "done.json"
    if done.exists() and done.stat().st_mtime >= detected.stat().st_mtime:
        metrics = json.loads(done.read_text())  # this detector is evaluated already
    else:
        metrics = timed("evaluate", lambda: run_evaluate(cfg, workdir, dist))
    if dist.main:
        metrics["seconds"] = timing
        atomic_write_text(workdir / "metrics.json", json.dumps(metrics, indent=1))
    return metrics


def summary(metrics: dict) -> str:
    det = metrics.get("detection", {})
    lines = []
    if det:
        maps = " ".join(f"@{t} {v:.3f}" for t, v in det["map_action"].items())
        base = " ".join(f"@{t} {v:.3f}" for t, v in det["baseline"]["map_action"].items())
        lines.append(f"detection ({det['modality']}): mAP {maps}; clip accuracy "
                     f"{det['clip_accuracy']:.3f}; trivial baseline mAP {base}")  # fmt: skip
        for m, figures in det.get("other_modalities_map_action", {}).items():
            shown = " ".join(f"@{t} {v:.3f}" for t, v in figures.items())
            lines.append(f"  for reference, the {m} detector alone: mAP {shown}")
    for key, acc in metrics.get("classification", {}).items():
        lines.append(f"classification {key}: " + " ".join(f"{m} {a:.3f}" for m, a in acc.items()))
    return "\n".join(lines)


def run_finetune(cfg: Config, args: argparse.Namespace, dist: distributed.Dist) -> int:
    from training.finetune import export, finetune
    from training.finetune import summary as finetune_summary

    if args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    report = finetune(
        cfg, args.start, args.cache, args.workdir, args.modalities, args.epochs, args.resume, dist
    )
    if not dist.main:
        return 0
    print(finetune_summary(report))
    print(f"wrote {args.workdir / 'finetune.json'} and {args.workdir / 'finetune' / 'depth.pt'}")
    if args.export is None:
        print(f"export: gd-export onnx --checkpoint {args.workdir / 'finetune' / 'depth.pt'} "
              f"--cache {args.cache} --out DIR")  # fmt: skip
        return 0
    return 1 if export(args.workdir, args.cache, report, args.export, args.overwrite) else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        preset = args.preset or ("quick" if args.command == "finetune" else None)
        cfg = load_config(preset, args.config, args.overrides)
        if args.command == "show-config":
            print(cfg.to_yaml(), end="")
            return 0
        dist = distributed.setup(cfg.train.device, cfg.train.threads)
        try:
            if args.command in STAGES:
                metrics = run_stage(cfg, args.workdir, args.command, args.resume, dist=dist)
                if dist.main:
                    shown = {k: v for k, v in metrics.items() if k.endswith("accuracy")}
                    print(f"{args.command}: {json.dumps(shown)}")
            elif args.command == "finetune":
                return run_finetune(cfg, args, dist)
            elif args.command == "evaluate":
                refused = None if args.force else other_config_than_trained(cfg, args.workdir)
                if refused:
                    raise TrainingError(refused)
                metrics = run_evaluate(cfg, args.workdir, dist)
                if dist.main:
                    print(summary(metrics))
            else:
                metrics = pipeline(cfg, args.workdir, dist)
                if dist.main:
                    print(summary(metrics))
                    print(f"wrote {args.workdir / 'metrics.json'}")
        finally:
            distributed.cleanup()
    except (ConfigError, TrainingError, ValueError, FileNotFoundError) as e:
        print(f"gd-train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
