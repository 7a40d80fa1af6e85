"""Write a bundle's model card (`README.md`, and the plot `per_class_ap.png`) from its
`model.json`, so the two never disagree.

Run: python -m export.card BUNDLE [--live SUMMARY.json ...] [--command "how it was built"]

`--live` takes the `summary.json` written by `bench/live_accuracy.py`, one per test condition
(camera profile, frame size, difficulty), and records its figures in `model.json` as the list
`metrics.live` (replacing the one there): upload and live mAP over actions (mean ± std over
seeds), event latency median and p90, frames sent and dropped, what was tested on, when, and
the command (rebuilt from the summary's config when the summary does not record one). Per-class
AP of the upload and live answers is computed from the prediction files the benchmark writes
beside its summary (`seed-N/ground_truth`, `upload`, `live`), with the metric of `gd-eval`.

The card then shows: those figures, the latency a live client should expect
(`ModelBundle.live_latency_s`), per-class AP (held-out test videos, from `gd-train evaluate` or
`gd-export evaluate`, and the live benchmark's) as a table and a plot, and the training data in
plain words. `model.json` is written again in any case, which also makes its paths portable
(`core.bundle.write_bundle_json`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.bundle import BundleError, ModelBundle, load_bundle, portable, write_bundle_json
from core.files import atomic_write_text
from core.labels import read_label_dir
from core.metrics import evaluate_detection

PLOT = "per_class_ap.png"
TIOUS = ("0.1", "0.3", "0.5")
CLASS_TIOU = "0.5"  # per-class AP is shown at this tIoU
BENCH = "bench/live_accuracy.py"
# summary config key -> bench/live_accuracy.py option, to rebuild a command it did not record
BENCH_OPTIONS = (
    ("model", "--model"),
    ("data", "--data"),
    ("seeds", "--seeds"),
    ("videos", "--videos"),
    ("difficulty", "--difficulty"),
    ("size", "--size"),
    ("camera", "--camera"),
    ("actions", "--actions"),
    ("encoding", "--encoding"),
    ("score_delay", "--score-delay"),
)


class LiveSummaryError(ValueError):
    """A `--live` file is not a live benchmark summary of this bundle."""


# --- reading the live benchmark ------------------------------------------------------------


def read_live_summary(path: Path, bundle: ModelBundle) -> dict[str, Any]:
    """The `metrics.live` record of one `bench/live_accuracy.py` summary of `bundle`."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LiveSummaryError(f"{path}: not a readable JSON file ({e})") from e
    where = f"{path} (a {BENCH} summary.json?)"
    model = _need(summary, ("model",), where, dict)
    measured = (_need(model, ("name",), where, str), _need(model, ("version",), where, str))
    if measured != (bundle.name, bundle.version):
        raise LiveSummaryError(
            f"{path} measured model {' '.join(measured)}, this bundle is {bundle.name} "
            f"{bundle.version}: run {BENCH} --model {bundle.root}"
        )
    config = _need(summary, ("config",), where, dict)
    seeds = _need(summary, ("seeds",), where, dict)
    if not seeds:
        raise LiveSummaryError(f"{where}: 'seeds' is empty")
    agg = _need(summary, ("mean_std",), where, dict)
    record: dict[str, Any] = {
        "date": summary.get("date") or _file_date(path),
        "command": portable(_command(summary.get("command"), config)),
        "tested_on": _conditions(config, seeds, where) | {"references": summary.get("references")},
        "upload_map": {t: _mean_std(agg, ("upload_map", t), where) for t in TIOUS},
        "live_map": {t: _mean_std(agg, ("live_map", t), where) for t in TIOUS},
        "latency_s": {
            "median": _mean_std(agg, ("latency_median_s",), where),
            "p90": _mean_std(agg, ("latency_p90_s",), where),
        },
        "frames_sent": _mean_std(agg, ("frames_sent",), where),
        "frames_dropped": _mean_std(agg, ("frames_dropped",), where),
        "actions_missed": _mean_std(agg, ("missed",), where),
        "actions_matched": _seed_mean(seeds, ("latency_s", "matched")),
    }
    per_class = live_per_class(path.parent, list(seeds), bundle.num_classes)
    if per_class is not None:
        record["ap_per_class"] = per_class
    return record


def _need(obj: dict, keys: tuple[str, ...], where: str, kind: type) -> Any:
    """`obj[k1][k2]...`, or a `LiveSummaryError` naming the path that is missing or wrong."""
    name = ".".join(keys)
    value: Any = obj
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise LiveSummaryError(f"{where}: missing {name!r}")
        value = value[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise LiveSummaryError(f"{where}: {name!r} must be {kind.__name__}, got {value!r}")
    return value


def _mean_std(agg: dict, keys: tuple[str, ...], where: str) -> dict[str, float | None]:
    """`{mean, std}` of the summary's `mean_std`; None where no seed measured it."""
    pair = _need(agg, keys, f"{where}: mean_std", dict)
    out = {}
    for key in ("mean", "std"):
        value = pair.get(key, "missing")
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise LiveSummaryError(
                f"{where}: mean_std.{'.'.join(keys)}.{key} must be a number or null, got {value!r}"
            )
        out[key] = None if value is None else float(value)
    return out


def _seed_mean(seeds: dict, keys: tuple[str, ...]) -> float | None:
    """Mean over seeds of a figure the summary's mean_std leaves out; None if a seed lacks it."""
    try:
        return float(np.mean([_need(r, keys, "seed", int | float) for r in seeds.values()]))
    except LiveSummaryError:
        return None


def _file_date(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).date().isoformat()


def _command(recorded: Any, config: dict) -> str:
    """The summary's command, or one rebuilt from its config (the options that choose data
    and serving; the rest were the benchmark's defaults or do not change the figures)."""
    if isinstance(recorded, list):
        return shlex.join(map(str, recorded))
    if isinstance(recorded, str):
        return recorded
    args = [BENCH]
    for key, option in BENCH_OPTIONS:
        value = config.get(key)
        if value is None or value == []:
            continue
        if key == "size" and isinstance(value, list) and len(value) == 2:
            value = f"{value[0]}x{value[1]}"
        args += [option, *map(str, value if isinstance(value, list) else [value])]
    args += ["--all-videos"] if config.get("all_videos") else []
    args += ["--no-reduce"] if config.get("reduce") is False else []
    args += ["--no-references"] if config.get("references") is False else []
    return shlex.join(args)


def _conditions(config: dict, seeds: dict, where: str) -> dict[str, Any]:
    size = config.get("size")
    videos = [len(_need(r, ("videos",), f"{where}: seeds", list)) for r in seeds.values()]
    ready = next(iter(seeds.values())).get("ready") or {}
    return {
        "camera": config.get("camera"),
        "frame_size": f"{size[0]}x{size[1]}" if isinstance(size, list) and len(size) == 2 else None,
        "difficulty": config.get("difficulty"),
        "data": portable(config["data"]) if config.get("data") else None,
        "seeds": list(seeds),
        "videos_per_seed": videos,
        "mode": config.get("mode"),
        "score_delay": ready.get("score_delay", config.get("score_delay")),
    }


def live_per_class(folder: Path, seeds: list[str], num_classes: int) -> dict | None:
    """Per-class AP of the upload and live predictions (mean over seeds), from the files the
    benchmark writes beside its summary; None if they are not there."""
    out: dict[str, dict[str, list[float]]] = {}
    for kind in ("upload", "live"):
        per_seed = []
        for seed in seeds:
            run = folder / f"seed-{seed}"
            if not (run / "ground_truth").is_dir() or not (run / kind).is_dir():
                return None
            gt = read_label_dir(run / "ground_truth")
            pred = read_label_dir(run / kind, need_confidence=True)
            tious = tuple(float(t) for t in TIOUS)
            per_seed.append(evaluate_detection(gt, pred, num_classes, tious).ap_per_class)
        mean = np.mean(per_seed, axis=0)
        out[kind] = {t: [float(v) for v in row] for t, row in zip(TIOUS, mean, strict=True)}
    return out


# --- the card --------------------------------------------------------------------------------


def render_card(bundle_dir: Path, command: str) -> str:
    """The card of the bundle as `model.json` describes it (writes the per-class plot)."""
    b = load_bundle(bundle_dir)
    columns = per_class_columns(b)
    plotted = plot_per_class(b.classes[1:], columns, b.root / PLOT)
    lines = [
        f"# Model card: {b.name} {b.version}",
        "",
        "A depth-only action detector trained with graph distillation on the synthetic "
        "benchmark (`gd-synth`), exported by `gd-export`. It sees depth alone; skeleton and "
        "other modalities taught it during training only. Everything here is rendered from "
        "`model.json` by `python -m export.card`.",
        "",
        *live_section(b),
        *latency_section(b),
        *per_class_section(b.classes[1:], columns, plotted),
        *training_section(b),
        "## Rebuild",
        "",
        "```sh",
        command,
        "```",
        "",
        *input_section(b),
        "## Provenance",
        "",
        "<details><summary>model.json <code>training</code> (the figures above are its "
        "<code>metrics</code>)</summary>",
        "",
        "```json",
        json.dumps(b.training, indent=1, default=str),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def live_section(b: ModelBundle) -> list[str]:
    runs = b.metrics.get("live") or []
    if not runs:
        return [
            "## What users meet",
            "",
            f"Not measured yet: run `{BENCH} --model BUNDLE`, then "
            "`python -m export.card BUNDLE --live OUT/summary.json`.",
            "",
        ]
    lines = [
        "## What users meet: live streams and uploads",
        "",
        f"Measured with `{BENCH}`: held-out videos, each streamed over `/v1/stream` at real "
        "time (all at once, as cameras would) and uploaded to `/v1/detections`, scored with "
        "the PKU-MMD metric (mAP over actions, mean ± std over seeds).",
        "",
    ]
    return [*lines, *(line for run in runs for line in live_run(run))]


def live_run(run: dict[str, Any]) -> list[str]:
    """One condition of the live benchmark: a table of mAPs, latency, drops, the command."""
    on = run["tested_on"]
    videos = on["videos_per_seed"]
    per_seed = f"{videos[0]}" if len(set(videos)) == 1 else "/".join(map(str, videos))
    seeds = f"{len(videos)} seeds × {per_seed} videos" if len(videos) > 1 else f"{per_seed} videos"
    delay = on.get("score_delay")
    lat, sent, dropped = run["latency_s"], run["frames_sent"], run["frames_dropped"]
    matched = run.get("actions_matched")
    over = "" if matched is None else f"over {matched:.0f} matched actions, "
    pm = functools.partial(_pm, with_std=len(videos) > 1)
    return [
        f"### {describe_conditions(on)}: {seeds}, {run['date']}",
        "",
        "| | " + " | ".join(f"mAP@{t}" for t in TIOUS) + " |",
        "|---|" + "---|" * len(TIOUS),
        "| upload | " + " | ".join(pm(run["upload_map"][t]) for t in TIOUS) + " |",
        f"| live (score delay {'server default' if delay is None else delay}) | "
        + " | ".join(pm(run["live_map"][t]) for t in TIOUS)
        + " |",
        "",
        "- event latency, from a ground-truth action's start to the live `action` start "
        f"event that matches it: median {pm(lat['median'], 2)} s, p90 "
        f"{pm(lat['p90'], 2)} s ({over}{pm(run['actions_missed'], 0)} actions "
        "without one)" + (" per seed" if len(videos) > 1 else ""),
        f"- frames dropped by the server: {pm(dropped, 0)} of {pm(sent, 0)} sent"
        + (" per seed" if len(videos) > 1 else ""),
        f"- command: `{run['command']}`",
        "",
    ]


# What a person-crop model's figures depend on: whether the server had the cameras' empty-room
# references (summaries of other models, or older ones, say nothing).
REFERENCES = {
    True: ", empty-room references stored",
    False: ", no references (whole frames)",
}


def describe_conditions(on: dict[str, Any]) -> str:
    camera = f"camera {on['camera']}, " if on.get("camera") else ""
    frames = f"{on['frame_size']} frames" if on.get("frame_size") else "frames"
    if not on.get("frame_size") and on.get("camera"):
        frames = "frames at the camera's size"
    data = f" ({on['data']})" if on.get("data") else ""
    refs = REFERENCES.get(on.get("references"), "")
    return f"{camera}{frames}, difficulty {on.get('difficulty')}{refs}{data}"


def _pm(pair: dict[str, float | None], digits: int = 3, with_std: bool = True) -> str:
    """ "mean ± std" (the mean alone for one seed)."""
    if pair["mean"] is None:
        return "-"
    mean = f"{pair['mean']:.{digits}f}"
    return f"{mean} ± {pair['std'] or 0.0:.{digits}f}" if with_std else mean


def latency_section(b: ModelBundle) -> list[str]:
    spec = b.clip
    return [
        "## Latency a live client should expect",
        "",
        f"A clip's live scores are due **{b.live_latency_s:.3g} s** after the clip begins: its "
        f"span, {spec.clip_len} frames at {spec.kept_fps:g} fps ({spec.clip_seconds:g} s, the "
        "resampler's last tick inside it), plus `score_delay` "
        f"= {b.score_delay} later clips of {spec.clip_step / spec.kept_fps:g} s each "
        "(`postprocess.score_delay` in model.json, 0 when absent), plus the server's compute "
        "time. An `action` start event is sent with the first clip whose activity reaches the "
        "threshold, so expect it this long after the start of the clip that shows the action; "
        "the event latency measured from the actions' true starts is above. A server run "
        "with another `--score-delay`, or a stream asking for "
        "one in its `hello`, moves it: `ready` and `/v1/model` state the figure in force "
        "(`latency_s`).",
        "",
    ]


def per_class_columns(b: ModelBundle) -> dict[str, list[float]]:
    """Per-class AP at `CLASS_TIOU` by source: the held-out test videos (`gd-export evaluate`
    in metrics.test, else `gd-train evaluate` in the checkpoint's metrics) and each live
    benchmark condition's upload and live answers."""
    columns = {}
    checkpoint_test = b.training.get("checkpoint_metrics", {}).get("test", {})
    for source in (b.metrics.get("test", {}), checkpoint_test):
        values = source.get("ap_per_class", {}).get(CLASS_TIOU)
        if values is not None:
            columns["held-out test"] = values
            break
    for run in b.metrics.get("live") or []:
        for kind, values in (run.get("ap_per_class") or {}).items():
            on = run["tested_on"]
            size = on.get("camera") or on.get("frame_size") or "?"
            name = f"{kind} {size} d{on.get('difficulty')}"
            name += " no references" if on.get("references") is False else ""
            columns[name] = values[CLASS_TIOU]
    return {k: v for k, v in columns.items() if len(v) == b.num_classes}


def per_class_section(
    classes: tuple[str, ...], columns: dict[str, list[float]], plotted: bool
) -> list[str]:
    lines = [f"## Per-class AP (tIoU {CLASS_TIOU})", ""]
    if not columns:
        return [*lines, "Not recorded in model.json.", ""]
    lines += [
        "| # | class | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    return [
        *lines,
        *(
            f"| {i + 1} | {name} | " + " | ".join(f"{v[i]:.3f}" for v in columns.values()) + " |"
            for i, name in enumerate(classes)
        ),
        "",
        *([f"![per-class AP]({PLOT})", ""] if plotted else []),
    ]


def plot_per_class(classes: tuple[str, ...], columns: dict[str, list[float]], path: Path) -> bool:
    """Grouped horizontal bars of per-class AP; no file (and none left over) without data."""
    if not columns:
        path.unlink(missing_ok=True)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, k = len(classes), len(columns)
    height = 0.8 / k
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.22 * n * max(1, k / 2)))
    for j, (name, values) in enumerate(columns.items()):
        ax.barh(np.arange(n) + (j - (k - 1) / 2) * height, values, height, label=name)
    ax.set_yticks(np.arange(n), classes)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"AP at tIoU {CLASS_TIOU}")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def training_section(b: ModelBundle) -> list[str]:
    lines = ["## Training data", ""]
    config = b.training.get("config", {})
    synth, target = config.get("synth"), config.get("target", {})
    if not isinstance(synth, dict):
        lines.append("model.json records no synthetic training data (see Provenance).")
    else:
        camera = f", camera profile {synth['camera']}" if synth.get("camera") else ""
        actions = synth.get("actions") or ["?", "?"]
        teachers = [m for m in target.get("modalities", []) if m != "depth"]
        lines.append(
            f"Synthetic data from `gd-synth` (seed {synth.get('seed')}, difficulty "
            f"{synth.get('difficulty')}): {synth.get('videos')} detection videos of "
            f"{actions[0]}-{actions[1]} actions each in the PKU-MMD layout, "
            f"{synth.get('samples')} classification clips in the NTU RGB+D layout for "
            f"pre-training; depth frames {synth.get('size')}{camera}. "
            + (f"Teachers during training only: {', '.join(teachers)}. " if teachers else "")
            + f"Split: {b.training.get('dataset', {}).get('split', '?')}."
        )
    test = b.metrics.get("test", {}).get("map_action")
    if test:
        figures = ", ".join(f"@{t} {v:.3f}" for t, v in test.items())
        lines += [
            "",
            f"mAP over actions on its held-out test videos ({b.metrics['test'].get('videos')} "
            f"videos, upload path, ONNX Runtime): {figures}.",
        ]
    return [*lines, ""]


def input_section(b: ModelBundle) -> list[str]:
    spec = b.clip
    size = sum((b.root / f.path).stat().st_size for f in b.files.values())
    return [
        "## Input",
        "",
        f"- depth uint16 mm, valid {spec.depth_min_mm}-{spec.depth_max_mm} mm, resampled to "
        f"{spec.kept_fps:g} fps (source {spec.source_fps:g} fps / {spec.downsample})",
        f"- clips of {spec.clip_len} frames ({spec.clip_seconds:g} s) at "
        f"{spec.height}x{spec.width}, every {spec.clip_step} frames; windows of "
        f"{spec.window} clips, step {spec.window_step} offline",
        f"- sequence encoder: {'causal' if b.causal else 'bidirectional'}; activity "
        f"threshold {b.activity_threshold}",
        f"- files: {size / 1e6:.1f} MB",
        "",
        f"## Classes ({b.num_classes} actions, 0 = background)",
        "",
        ", ".join(f"{i} {name}" for i, name in enumerate(b.classes)),
        "",
    ]


def write_card(bundle_dir: Path, command: str, live: list[Path]) -> None:
    """Record `live` summaries (if any) in model.json, write it portably, render the card."""
    bundle = load_bundle(bundle_dir)
    metrics = dict(bundle.metrics)
    if live:
        metrics["live"] = [read_live_summary(p, bundle) for p in live]
    write_bundle_json(dataclasses.replace(bundle, metrics=metrics))
    atomic_write_text(bundle_dir / "README.md", render_card(bundle_dir, command))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m export.card", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    p.add_argument("bundle", type=Path)
    p.add_argument("--command", default="make default-model", help="how to rebuild it")
    p.add_argument(
        "--live",
        type=Path,
        action="append",
        default=[],
        metavar="SUMMARY",
        help=f"a {BENCH} summary.json of this bundle, one per test condition (repeatable); "
        "replaces metrics.live in model.json",
    )
    args = p.parse_args(argv)
    try:
        write_card(args.bundle, args.command, args.live)
    except (BundleError, LiveSummaryError) as e:
        print(f"export.card: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.bundle / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
