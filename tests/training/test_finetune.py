"""`gd-train finetune` on real site recordings: `gd-synth recordings` (depth + colour) ->
`gd-prep --dataset recordings` -> fine-tune a tiny bundle for one epoch with a new class ->
before/after figures -> `--export` bundle. Plus the class extension and the refusals."""

import json
import re
import shutil

import numpy as np
import pytest
import torch

from core.bundle import load_bundle
from export.onnx import WEIGHTS, check_parity
from tests.helpers.caches import TINY
from tests.helpers.retraining import EXTENDED, MODEL, SITE, tiny_checkpoint
from tests.helpers.tiny_bundle import make_bundle
from training.cache import Cache
from training.checkpoint import Architecture, build_network
from training.cli import main
from training.data import class_names, split_samples
from training.finetune import (
    FinetuneError,
    extend_class_rows,
    extended_classes,
    load_start,
    relabel,
)

# --- the class list ------------------------------------------------------------------------


def test_old_classes_keep_their_rows_and_new_rows_are_fresh():
    torch.manual_seed(0)
    old = build_network("detection", Architecture("depth", 4, 4, num_classes=2, hidden_size=8))
    torch.manual_seed(1)
    fresh = build_network("detection", Architecture("depth", 4, 4, num_classes=3, hidden_size=8))
    # Another order than the model's, to check that rows follow names, not positions.
    new, names = ["c", "b", "a"], ["a", "b"]
    out = extend_class_rows(old.state_dict(), names, new, fresh.state_dict())
    for key in ("sequence.fc.weight", "sequence.fc.bias"):
        was, now, init = old.state_dict()[key], out[key], fresh.state_dict()[key]
        assert now.shape[0] == 4
        assert torch.equal(now[0], was[0])  # background
        assert torch.equal(now[3], was[1]) and torch.equal(now[2], was[2])  # a, b by name
        assert torch.equal(now[1], init[1]) and not torch.equal(now[1], torch.zeros_like(now[1]))
    same = [k for k in out if k not in ("sequence.fc.weight", "sequence.fc.bias")]
    assert all(torch.equal(out[k], old.state_dict()[k]) for k in same)
    fresh.load_state_dict(out)  # the extended weights fit the wider network


def test_the_class_list_extends_the_models_and_refuses_conflicts():
    assert extended_classes(MODEL, SITE) == EXTENDED
    assert extended_classes(MODEL, ["hopping"]) == MODEL  # keep: nothing new
    for site, why in (
        (["background", "x"], "'background' is the model's row 0"),
        (["x", "y", "x"], "listed twice: \\['x'\\]"),
        (["Sit  Down"], ".*only in case or spacing: 'Sit  Down' \\(model: 'sit down'\\)$"),
    ):
        with pytest.raises(FinetuneError, match=f"class list conflict: {why}"):
            extended_classes(MODEL, site)


@pytest.mark.slow
def test_the_site_cache_names_its_classes_and_splits_by_recording(cache):
    c = Cache(cache)
    assert class_names(c, 3) == SITE[:3]  # meta.json classes, not class_<id>
    train, val = split_samples(c, mini=1.0, val_fraction=0.5, seed=0)
    assert len(train) == 1 and len(val) == 1  # each site-NNN recording a group of its own
    relabel(c, SITE, EXTENDED)
    names = {s.name: s for s in c.samples}
    raw = {s["name"]: s for s in json.loads((cache / "meta.json").read_text())["samples"]}
    for name, s in names.items():
        for now, was in zip(s.info["segments"], raw[name]["segments"], strict=True):
            assert EXTENDED[int(now[0]) - 1] == SITE[int(was[0]) - 1] and now[1:] == was[1:]
    assert class_names(c, len(EXTENDED)) == EXTENDED


# --- the starting model --------------------------------------------------------------------


@pytest.mark.slow
def test_a_bundles_weights_reproduce_its_onnx_outputs(bundle, finetuned):
    assert load_start(bundle).ckpt.classes == ["background", *MODEL]  # the starting weights
    _, out, _ = finetuned  # written by gd-export onnx (the starting bundle's ONNX is hand-made)
    start, b = load_start(out), load_bundle(out)
    assert (out / WEIGHTS).is_file() and b.training["weights"]["path"] == WEIGHTS
    clips = np.random.default_rng(0).random((8, 4, 16, 16), np.float32)
    parity = check_parity(start.ckpt.network(), b, clips, "random clips")
    assert parity.max_abs_diff_probabilities <= parity.tolerance


@pytest.mark.slow
def test_finetune_adds_the_new_class_and_reports_before_and_after(bundle, finetuned):
    work, out, printed = finetuned  # gd-train finetune --epochs 1 --export, on the tiny site
    assert "mAP before: @0.1" in printed and "mAP after:  @0.1" in printed
    report = json.loads((work / "finetune.json").read_text())
    assert report["classes"] == ["background", *EXTENDED]
    assert report["new_classes"] == ["leaves bed", "stand up", "staggering"]
    assert report["modalities"] == ["depth", "rgb", "flow"]  # colour distils where present
    assert report["test_recordings"]
    for figures in (report["before"], report["after"]):
        assert set(figures["map_action"]) == {"0.1", "0.3", "0.5"}
        assert all(0 <= v <= 1 for v in figures["map_action"].values())
    for tiou, ap in report["before"]["ap_per_class"].items():
        assert all(ap[n] == 0 for n in report["new_classes"]), tiou  # no output for them
    exported = load_bundle(out)  # the bundle, with the site's classes, and its own weights
    assert list(exported.classes) == ["background", *EXTENDED]
    assert exported.metrics["finetune"]["after"] == report["after"]
    again = load_start(out)
    assert again.ckpt.classes == ["background", *EXTENDED]
    assert again.threshold == load_bundle(bundle).activity_threshold


# --- refusals ------------------------------------------------------------------------------


def edited_cache(cache, tmp_path, edit):
    """A copy of the cache whose meta.json `edit` changes."""
    copy = tmp_path / "edited"
    shutil.copytree(cache, copy)
    meta = json.loads((copy / "meta.json").read_text())
    edit(meta)
    (copy / "meta.json").write_text(json.dumps(meta))
    return copy


def all_train(meta):
    for s in meta["samples"]:
        s["subset"] = "train"


def rename_class(meta):
    meta["classes"][1] = "Sit down"


def other_size(meta):
    meta["clip"]["height"] = 24


@pytest.mark.parametrize(
    ("start", "edit", "extra", "message"),
    [
        ("missing", None, [], "no such bundle or checkpoint"),
        ("onnx-only", None, [], "holds no PyTorch weights"),
        ("checkpoint", all_train, [], "no test recordings"),
        ("checkpoint", rename_class, [], "conflict: .*'Sit down' \\(model: 'sit down'\\)"),
        ("checkpoint", other_size, [], "frames are not the model's: height 24 \\(model 16\\)"),
        ("checkpoint", None, ["--modalities", "rgb"], "--modalities rgb: depth, and only"),
        ("checkpoint", None, ["--epochs", "0"], "--epochs must be >= 1"),
    ],
)
@pytest.mark.slow
def test_bad_inputs_are_refused_with_a_message(
    cache, tmp_path, capsys, start, edit, extra, message
):
    paths = {"missing": tmp_path / "nothing", "onnx-only": tmp_path / "tiny",
             "checkpoint": tmp_path / "start.pt"}  # fmt: skip
    make_bundle(paths["onnx-only"])
    tiny_checkpoint(cache, paths["checkpoint"])
    site_cache = edited_cache(cache, tmp_path, edit) if edit else cache
    args = ["finetune", "--from", str(paths[start]), "--cache", str(site_cache),
            "--workdir", str(tmp_path / "ft"), *TINY, *extra]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gd-train: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "ft" / "finetune.json").exists()
