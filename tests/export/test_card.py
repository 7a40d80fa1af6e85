"""The model card: rendered from model.json, with the live benchmark's figures, the expected
live latency, per-class AP (table and plot) and the training data."""

import dataclasses
import json

import numpy as np
import pytest

from core.bundle import BundleError, load_bundle, write_bundle_json
from core.labels import write_label_file
from export.card import PLOT, main
from tests.helpers.tiny_bundle import make_bundle

TIOUS = ("0.1", "0.3", "0.5")
# Two actions per video, one of each class (frames at 30 fps).
GROUND_TRUTH = np.array([[1, 30, 119, 1.0], [2, 200, 299, 1.0]])


def pair(rng: np.random.Generator, scale: float = 1.0) -> dict[str, float]:
    return {"mean": float(rng.uniform(0, scale)), "std": float(rng.uniform(0, scale / 10))}


def live_summary(folder, bundle, seeds=("1000", "1001"), seed=0) -> dict:
    """A summary.json in bench/live_accuracy.py's format, with random figures, and its
    prediction files: uploads find exactly the class-1 actions, live streams the class-2 ones,
    so per-class AP is [1, 0] for uploads and [0, 1] live, by construction."""
    rng = np.random.default_rng(seed)
    videos = ["0001-L", "0002-M"]
    for s in seeds:
        run = folder / f"seed-{s}"
        for v in videos:
            write_label_file(run / "ground_truth" / f"{v}.txt", GROUND_TRUTH)
            write_label_file(run / "upload" / f"{v}.txt", GROUND_TRUTH[:1])
            write_label_file(run / "live" / f"{v}.txt", GROUND_TRUTH[1:])
    summary = {
        "model": {"path": str(bundle.root), "name": bundle.name, "version": bundle.version},
        "config": {
            "mode": "reduced zstd",
            "tiou": [0.1, 0.3, 0.5],
            "score_delay": None,
            "model": str(bundle.root),
            "data": None,
            "all_videos": True,
            "fps": 30.0,
            "videos": 2,
            "seeds": [int(s) for s in seeds],
            "difficulty": 0.25,
            "size": None,
            "actions": [8, 12],
            "camera": "d435",
            "synth_arg": [],
            "reduce": True,
            "encoding": "zstd",
            "threads": None,
        },
        "machine": {"cpus": 2, "load_before": [0, 0, 0], "load_after": [0, 0, 0]},
        "seeds": {
            s: {
                "data": str(folder / "data" / s),
                "videos": videos,
                "latency_s": {"median": 1.0, "p90": 2.0, "matched": 3 + i, "missed": 1},
                "ready": {"score_delay": 2},
            }
            for i, s in enumerate(seeds)
        },
        "mean_std": {
            "upload_map": {t: pair(rng) for t in TIOUS},
            "live_map": {t: pair(rng) for t in TIOUS},
            "latency_median_s": pair(rng, 3),
            "latency_p90_s": pair(rng, 5),
            "frames_sent": pair(rng, 1e4),
            "frames_dropped": pair(rng, 100),
            "late_sends": pair(rng, 100),
            "missed": pair(rng, 10),
        },
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return summary


def pm(p: dict, digits: int = 3) -> str:
    return f"{p['mean']:.{digits}f} ± {p['std']:.{digits}f}"


def test_card_lists_classes_metrics_and_the_command(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b")
    assert main([str(bundle.root), "--command", "make default-model"]) == 0
    card = (bundle.root / "README.md").read_text()
    assert "make default-model" in card
    assert all(name in card for name in bundle.classes)
    assert f"{bundle.clip.height}x{bundle.clip.width}" in card
    assert "Not measured yet" in card and "Not recorded in model.json" in card
    assert not (bundle.root / PLOT).exists()
    assert main([str(tmp_path / "nothing")]) == 2
    assert "not a model bundle" in capsys.readouterr().err


def test_the_live_figures_go_into_model_json_and_the_card(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    summary = live_summary(tmp_path / "live", bundle)
    assert main([str(bundle.root), "--live", str(tmp_path / "live" / "summary.json")]) == 0

    (live,) = load_bundle(bundle.root).metrics["live"]
    agg = summary["mean_std"]
    assert live["upload_map"] == agg["upload_map"] and live["live_map"] == agg["live_map"]
    assert live["latency_s"] == {"median": agg["latency_median_s"], "p90": agg["latency_p90_s"]}
    assert live["frames_dropped"] == agg["frames_dropped"]
    assert live["actions_matched"] == 3.5  # seeds matched 3 and 4
    on = live["tested_on"]
    assert (on["camera"], on["difficulty"], on["score_delay"]) == ("d435", 0.25, 2)
    assert on["seeds"] == ["1000", "1001"] and on["videos_per_seed"] == [2, 2]
    # No command in the summary: rebuilt from its config, with no path of this machine.
    assert live["command"].startswith("bench/live_accuracy.py --model .../b --seeds 1000 1001")
    assert "--camera d435" in live["command"] and "--all-videos" in live["command"]
    want = {"upload": [1.0, 0.0], "live": [0.0, 1.0]}
    assert {k: v["0.5"] for k, v in live["ap_per_class"].items()} == want

    card = (bundle.root / "README.md").read_text()
    for t in TIOUS:
        assert pm(agg["upload_map"][t]) in card and pm(agg["live_map"][t]) in card
    assert f"median {pm(agg['latency_median_s'], 2)} s, p90 {pm(agg['latency_p90_s'], 2)} s" in card
    assert f"{pm(agg['frames_dropped'], 0)} of {pm(agg['frames_sent'], 0)} sent" in card
    assert "camera d435" in card and "difficulty 0.25" in card and "2 seeds × 2 videos" in card
    assert "| live (score delay 2) |" in card
    assert "| 1 | small | 1.000 | 0.000 |" in card and "| 2 | large | 0.000 | 1.000 |" in card
    assert f"![per-class AP]({PLOT})" in card
    assert (bundle.root / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    load_bundle(bundle.root)  # the ONNX hashes still hold


def test_one_seed_shows_no_spread(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    summary = live_summary(tmp_path / "live", bundle, seeds=("7",))
    main([str(bundle.root), "--live", str(tmp_path / "live" / "summary.json")])
    card = (bundle.root / "README.md").read_text()
    upload = summary["mean_std"]["upload_map"]["0.5"]
    assert f"| {upload['mean']:.3f} |" in card and pm(upload) not in card
    assert ": 2 videos," in card


def test_without_prediction_files_the_live_figures_have_no_per_class_ap(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    live_summary(tmp_path / "live", bundle)
    summary = tmp_path / "summary.json"
    summary.write_text((tmp_path / "live" / "summary.json").read_text())  # no seed-N/ beside it
    assert main([str(bundle.root), "--live", str(summary)]) == 0
    assert "ap_per_class" not in load_bundle(bundle.root).metrics["live"][0]
    assert not (bundle.root / PLOT).exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["model"].update(version="9.9"), "measured model tiny 9.9, this bundle is"),
        (lambda s: s.pop("mean_std"), "missing 'mean_std'"),
        (lambda s: s["mean_std"]["live_map"].pop("0.3"), "missing 'live_map.0.3'"),
        (lambda s: s["mean_std"]["frames_dropped"].update(mean="0"), "must be a number or null"),
        (lambda s: s.update(seeds={}), "'seeds' is empty"),
    ],
)
def test_a_summary_that_does_not_fit_is_refused(tmp_path, capsys, change, message):
    bundle = make_bundle(tmp_path / "b")
    before = (bundle.root / "model.json").read_text()
    summary = live_summary(tmp_path / "live", bundle)
    change(summary)
    (tmp_path / "live" / "summary.json").write_text(json.dumps(summary))
    assert main([str(bundle.root), "--live", str(tmp_path / "live" / "summary.json")]) == 2
    assert message in capsys.readouterr().err
    assert (bundle.root / "model.json").read_text() == before


def test_a_file_that_is_not_json_is_refused(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "b")
    (tmp_path / "s.json").write_text("not json")
    assert main([str(bundle.root), "--live", str(tmp_path / "s.json")]) == 2
    assert "not a readable JSON file" in capsys.readouterr().err


@pytest.mark.parametrize("delay", [0, 2])
def test_the_expected_latency_follows_the_clip_spec_and_score_delay(tmp_path, delay):
    bundle = make_bundle(tmp_path / "b")
    write_bundle_json(dataclasses.replace(bundle, score_delay=delay))
    loaded = load_bundle(bundle.root)
    spec = loaded.clip
    assert loaded.score_delay == delay
    assert loaded.live_latency_s == (spec.clip_len + delay * spec.clip_step) / spec.kept_fps
    main([str(bundle.root)])
    card = (bundle.root / "README.md").read_text()
    assert f"**{loaded.live_latency_s:.3g} s**" in card and f"= {delay} later clips" in card


def test_a_score_delay_beyond_the_window_is_refused(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    meta = json.loads((bundle.root / "model.json").read_text())
    meta["postprocess"]["score_delay"] = bundle.clip.window
    (bundle.root / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="postprocess.score_delay must be in \\[0, 3\\]"):
        load_bundle(bundle.root)


def test_per_class_ap_of_training_and_the_training_data_in_words(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    ap = [0.25, 0.75]
    training = {
        "config": {
            "synth": {"samples": 40, "videos": 12, "size": "48x64", "camera": "d455",
                      "actions": [2, 3], "difficulty": 0.5, "seed": 4},
            "target": {"modalities": ["depth", "jjd"]},
        },
        "dataset": {"split": "cross-subject"},
        "checkpoint_metrics": {"test": {"ap_per_class": {"0.5": ap}}},
    }  # fmt: skip
    write_bundle_json(dataclasses.replace(bundle, training=training))
    assert main([str(bundle.root)]) == 0
    card = (bundle.root / "README.md").read_text()
    assert "| 1 | small | 0.250 |" in card and "| 2 | large | 0.750 |" in card
    assert (bundle.root / PLOT).is_file() and f"![per-class AP]({PLOT})" in card
    for words in ("difficulty 0.5", "12 detection videos", "2-3 actions", "40 classification",
                  "48x64, camera profile d455", "Teachers during training only: jjd"):  # fmt: skip
        assert words in card
