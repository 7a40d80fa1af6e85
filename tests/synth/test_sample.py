"""`gd-synth sample`: the quick start's recording is rendered as the default model's camera."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from synth.cli import SAMPLE_CAMERA, SAMPLE_SIZE, main

ROOT_MODEL = Path(__file__).parents[2] / "models/default/model.json"


def test_the_default_sample_has_the_default_models_training_frame_size():
    # The default model was trained on this camera at this size (training.dataset in its bundle);
    # a sample of another shape would show newcomers a weaker model than the one shipped.
    synth = json.loads(ROOT_MODEL.read_text())["training"]["config"]["synth"]
    assert synth["camera"] == SAMPLE_CAMERA
    assert tuple(int(v) for v in str(synth["size"]).split("x")) == SAMPLE_SIZE


@pytest.mark.slow
def test_sample_writes_camera_shaped_depth_and_its_labels(tmp_path, capsys):
    assert main(["sample", "--out", str(tmp_path), "--actions", "1", "--format", "npz"]) == 0
    depth = np.load(tmp_path / "sample.npz")["depth"]
    assert depth.shape[1:] == SAMPLE_SIZE and depth.dtype == np.uint16
    assert (tmp_path / "label" / "sample.txt").read_text().strip()
    reference = cv2.imread(str(tmp_path / "reference" / "sample.png"), cv2.IMREAD_UNCHANGED)
    assert reference.dtype == np.uint16 and reference.shape == SAMPLE_SIZE


def test_a_size_without_the_cameras_aspect_ratio_is_refused(tmp_path, capsys):
    assert main(["sample", "--out", str(tmp_path), "--size", "64x64", "--format", "npz"]) == 2
    err = capsys.readouterr().err
    assert "64x64 does not have the d435-vga aspect ratio" in err and "48x64" in err
    assert not (tmp_path / "sample.npz").exists()
