import json

import numpy as np
import pytest

from synth.cli import main
from synth.generate import SOURCE_CLASSES, TARGET_CLASSES, class_names
from training.datasets import NTUDataset, PKUMMDDataset

TINY = ["--size", "24x32", "--color-size", "24x32", "--workers", "1"]


@pytest.mark.slow
def test_classification_tree_reads_back_with_both_subsets(tmp_path, capsys):
    out = tmp_path / "ntu"
    assert main(["classification", "--out", str(out), "--samples", "8", "--seed", "3", *TINY]) == 0
    assert "wrote 8 classification samples" in capsys.readouterr().out
    train, test = NTUDataset(out, subset="train"), NTUDataset(out, subset="test")
    assert len(train) + len(test) == 8 and len(train) and len(test)
    assert len({s.action for s in [*train, *test]}) == 8  # every action before any repeats
    sample = train[0]
    assert sample.load_depth().shape[1:] == (24, 32)
    assert sample.load_skeleton().shape[1:] == (2, 25, 3)
    record = json.loads((out / "gd-synth.json").read_text())
    assert record["classes"] == class_names(SOURCE_CLASSES)
    assert record["layout"] == "ntu"


@pytest.mark.slow
def test_detection_tree_has_splits_labels_and_is_deterministic(tmp_path):
    args = ["detection", "--videos", "6", "--seed", "1", "--actions", "2", "3",
            "--modalities", "depth", *TINY]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    train = PKUMMDDataset(tmp_path / "a", split="cross-subject", subset="train")
    test = PKUMMDDataset(tmp_path / "a", split="cross-subject", subset="test")
    assert [v.name for v in train] == ["0001-L", "0001-M", "0001-R"]
    assert [v.name for v in test] == ["0002-L", "0002-M", "0002-R"]
    view_test = PKUMMDDataset(tmp_path / "a", split="cross-view", subset="test")
    assert {v.view for v in view_test} == {"L"}
    labels = train[0].labels
    assert len(labels) >= 2 and labels[:, 0].max() <= len(TARGET_CLASSES)
    assert np.all(labels[1:, 1] > labels[:-1, 2])  # ordered, with background between
    assert not (tmp_path / "a" / "rgb").exists()
    for rel in ["skeleton/0002-M.txt", "label/0001-R.txt", "depth/0001-L/Depth-00000010.png"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["classification", "--samples", "0"], "need at least one"),
        (["detection", "--videos", "1", "--actions", "5", "2"], "--actions needs"),
        (["classification", "--samples", "1", "--difficulty", "2"], "--difficulty must be"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "x"), *TINY]) == 2
    assert message in capsys.readouterr().err


def test_camera_profiles_set_the_frame_shape_and_are_recorded(tmp_path, capsys):
    out = tmp_path / "pku"
    args = ["detection", "--out", str(out), "--videos", "1", "--actions", "1", "1",
            "--modalities", "depth", "--color-size", "16x16", "--workers", "1"]  # fmt: skip
    assert main([*args, "--camera", "d435", "--camera-scale", "0.05"]) == 0
    video = PKUMMDDataset(out, split="cross-view", subset="test")[0]
    assert video.load_depth().shape[1:] == (24, 42)  # 480x848 * 0.05, rounded
    options = json.loads((out / "gd-synth.json").read_text())["options"]
    assert options["camera"] == "d435" and options["size"] == [24, 42]
    assert options["depth_fov"] == [87.0, 58.0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--camera", "kinect-v2", "--size", "48x48"], "does not have the kinect-v2 aspect"),
        (["--camera-scale", "0.5"], "--camera-scale needs --camera"),
        (["--camera", "d435", "--camera-scale", "0.5", "--size", "24x42"], "not both"),
        (["--camera", "d435", "--camera-scale", "0.01"], "frames need at least 16x16"),
    ],
)
def test_bad_camera_options_exit_2(tmp_path, capsys, extra, message):
    argv = ["classification", "--samples", "1", "--out", str(tmp_path / "x"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_help_lists_the_camera_profiles(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "d435: RealSense D435 depth, 16:9, 848x480, 87x58 deg" in text
    assert "kinect-v2: Kinect v2 depth (NTU RGB+D, PKU-MMD), 512x424, 70.6x60 deg" in text
