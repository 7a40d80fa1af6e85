import pytest
import torch

from core.clip import ClipSpec
from training.checkpoint import (
    Architecture,
    Checkpoint,
    CheckpointError,
    build_network,
    load_checkpoint,
    save_checkpoint,
)
from training.networks import Classifier, Detector


def make(task, arch):
    torch.manual_seed(0)
    net = build_network(task, arch)
    classes = ["background", "a", "b"] if task == "detection" else ["a", "b"]
    return net, Checkpoint(
        task=task, architecture=arch, clip=ClipSpec(height=32, width=32, clip_len=4),
        classes=classes, model=net.state_dict(), provenance={"seed": 0},
        metrics={"acc": 0.5}, state={"epoch": 3},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("task", "arch", "x"),
    [
        ("detection", Architecture("depth", 4, 4, 2, hidden_size=8), torch.rand(2, 3, 4, 32, 32)),
        ("classification", Architecture("jjd", 4, 2, 2, vector_dim=6), torch.rand(2, 4, 6)),
    ],
)
def test_round_trip_rebuilds_the_same_network(tmp_path, task, arch, x):
    net, ckpt = make(task, arch)
    save_checkpoint(tmp_path / "c.pt", ckpt)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded.architecture == arch and loaded.clip == ckpt.clip
    assert loaded.state == {"epoch": 3} and loaded.classes == ckpt.classes
    rebuilt = loaded.network()
    assert isinstance(rebuilt, Detector if task == "detection" else Classifier)
    assert not rebuilt.training
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x)[0], net.eval()(x)[0])


def test_bad_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a gd-train checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="task must be one of"):
        build_network("segmentation", Architecture("depth", 4, 4, 2))
