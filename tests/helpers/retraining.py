"""What the retraining tests share: a tiny site (synthetic recordings with colour, a class the
model lacks), its prepared cache, a tiny starting bundle (weights.pt as gd-export writes it)
and that bundle fine-tuned on the site by `gd-train finetune --export`
(tests/training/test_finetune.py, tests/e2e/test_retraining.py)."""

from __future__ import annotations

import pytest

# Fixtures for every test module (tests/conftest.py loads this file as a plugin): torch and
# training are imported when a fixture runs, not when the suite starts. Built once a session
# (the tests only read them); tests/conftest.py keeps the modules using them on one worker.

MODEL = ["sit down", "hopping", "drink water"]  # the tiny starting model's actions
# The site's classes.txt: "leaves bed" is new, "touch head" of the synthetic labels is renamed
# to it; "drink water" is the model's, absent from the site.
SITE = ["leaves bed", "sit down", "stand up", "staggering", "hopping"]
EXTENDED = [*MODEL, "leaves bed", "stand up", "staggering"]
GEOMETRY = dict(clip_len=4, clip_step=4, window=3, window_step=2)


def make_recordings(root):
    """Three tiny synthetic site recordings (24x32 depth, 30x40 colour) with labels.csv and
    classes.txt, written through librealsense's software device."""
    from synth.cli import main as synth_main

    args = ["recordings", "--out", str(root), "--count", "3", "--color", "--size", "24x32",
            "--color-size", "30x40", "--actions", "1", "2", "--workers", "1",
            "--seed", "4"]  # fmt: skip
    assert synth_main(args) == 0
    return root


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """Three synthetic recordings with colour; labels with a class the model lacks."""
    root = make_recordings(tmp_path_factory.mktemp("site"))
    labels = root / "labels.csv"
    labels.write_text(labels.read_text().replace("touch head", "leaves bed"))
    (root / "classes.txt").write_text("\n".join(SITE) + "\n")
    return root


@pytest.fixture(scope="session")
def cache(site, tmp_path_factory):
    from training.prep import main as prep_main

    out = tmp_path_factory.mktemp("cache") / "site"
    args = ["--dataset", "recordings", "--root", str(site), "--out", str(out), "--size", "16x16",
            "--flow", "farneback", "--workers", "1"]  # fmt: skip
    assert prep_main(args) == 0
    return out


def tiny_checkpoint(cache_root, path, seed=0):
    """A depth detector over MODEL with random weights, at the cache's frames."""
    import torch

    from core.clip import ClipSpec
    from training.cache import Cache
    from training.checkpoint import Architecture, Checkpoint, build_network, save_checkpoint

    spec = ClipSpec.from_dict({**Cache(cache_root).meta["clip"], **GEOMETRY})
    arch = Architecture("depth", spec.clip_len, width=4, num_classes=len(MODEL), hidden_size=8)
    torch.manual_seed(seed)
    net = build_network("detection", arch)
    model = {k: v.detach().clone() for k, v in net.state_dict().items()}
    ckpt = Checkpoint("detection", arch, spec, ["background", *MODEL], model, {}, {}, {})
    save_checkpoint(path, ckpt)
    return ckpt


@pytest.fixture(scope="session")
def bundle(cache, tmp_path_factory):
    """The tiny starting model as a bundle: weights.pt written by gd-export's own code (all
    that `gd-train finetune --from` reads), with hand-made ONNX encoders of the model's shapes
    (tests/helpers/tiny_bundle.py, all that the server reads). A torch export of the encoders
    costs 6-12 CPU s; that gd-export's ONNX and weights.pt agree is checked on the fine-tuned
    bundle, which gd-export writes (tests/training/test_finetune.py)."""
    import dataclasses

    from core.bundle import write_bundle_json
    from export.onnx import write_weights
    from tests.helpers.tiny_bundle import CLASSES, make_bundle

    root = tmp_path_factory.mktemp("bundle") / "tiny"
    ckpt = tiny_checkpoint(cache, root.parent / "start.pt")
    made = make_bundle(root, spec=ckpt.clip, extra_classes=len(ckpt.classes) - len(CLASSES))
    start = dataclasses.replace(
        made, name="tiny", version="1", classes=tuple(ckpt.classes),
        activity_threshold=0.35,  # not gd-export's default: fine-tuning must carry it over
        training={"weights": write_weights(ckpt, root)},
    )  # fmt: skip
    write_bundle_json(start)
    return root


@pytest.fixture(scope="session")
def finetuned(bundle, cache, tmp_path_factory):
    """`gd-train finetune --epochs 1 --export` of the starting bundle on the site's cache,
    through the command's own main: a process of its own added torch's import and the
    exporter's first use again (30 CPU s; gd-train's main runs in processes of its own under
    torchrun in tests/training/test_ddp.py). (workdir, exported bundle, the command's stdout);
    once a run: it takes seconds."""
    import contextlib
    import io

    from tests.helpers.caches import TINY
    from training.cli import main

    root = tmp_path_factory.mktemp("finetuned")
    work, site_model = root / "ft", root / "models" / "site"
    args = ["finetune", "--from", str(bundle), "--cache", str(cache), "--workdir", str(work),
            "--epochs", "1", "--export", str(site_model), *TINY]  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    assert code == 0, err.getvalue()[-4000:]
    return work, site_model, out.getvalue()
