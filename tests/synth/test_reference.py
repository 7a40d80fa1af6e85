"""The empty-room reference gd-synth writes beside each sample (Shot.reference): what the
sample's camera sees without the people, for the person-centric crop (core.foreground)."""

import cv2
import numpy as np
import pytest

from synth.cli import main
from synth.formats import NTU_DEPTH_DIR, PKU_DEPTH_DIR, reference_path
from synth.generate import classification_shot
from synth.render import Sensor
from synth.subjects import DEFAULT_DIFFICULTY

TINY = ["--size", "24x32", "--color-size", "24x32", "--workers", "1", "--modalities", "depth"]
# A normal draw lies beyond 6 standard deviations with p = 2e-9: none of the ~4e5 seeded
# pixel draws below does. Each side is rounded to whole millimetres: 1 mm more.
SIGMAS = 6


@pytest.fixture(scope="module")
def filmed():
    shot = classification_shot(action=3, subject=2, camera=1, size=(48, 64), color_size=(16, 16))
    return shot.reference(), shot.film()


def noise_mm(reference: np.ndarray) -> np.ndarray:
    """The sensor model's depth noise (std, mm) at the reference's depth: grows with z^2."""
    sensor = Sensor.for_difficulty(DEFAULT_DIFFICULTY)
    return sensor.noise_at_1m * (reference / 1000.0) ** 2 * 1000.0


def test_the_reference_is_a_depth_frame_of_the_cameras_size_in_the_valid_range(filmed):
    reference, rec = filmed
    assert reference.dtype == np.uint16 and reference.shape == rec.depth.shape[1:]
    sensor = Sensor.for_difficulty(DEFAULT_DIFFICULTY)
    read = reference[reference > 0]
    assert read.size and read.min() >= sensor.min_depth * 1000
    assert read.max() <= sensor.max_depth * 1000


def test_the_reference_is_the_frames_depth_where_no_person_is(filmed):
    reference, rec = filmed
    depth = rec.depth.astype(np.float64)
    ref = np.broadcast_to(reference.astype(np.float64), depth.shape)
    room = ~rec.body_mask & (depth > 0) & (ref > 0)  # both read, no person in front
    assert room.mean() > 0.5  # most of the frame: the comparison is not vacuous
    tolerance = SIGMAS * noise_mm(ref) + 1
    assert np.all(np.abs(depth - ref)[room] <= tolerance[room])


def test_the_reference_is_farther_than_the_person(filmed):
    reference, rec = filmed
    depth = rec.depth.astype(np.float64)
    ref = np.broadcast_to(reference.astype(np.float64), depth.shape)
    person = rec.body_mask
    beyond = ref == 0  # the room lies beyond the sensor's range there
    tolerance = SIGMAS * noise_mm(ref) + 1
    # never clearly nearer than the person; clearly farther except where the person touches
    # the room (feet on the floor, a back against the chair): most of the body
    assert np.all((beyond | (ref - depth > -tolerance))[person])
    assert (beyond | (ref - depth > tolerance))[person].mean() > 0.5


def read_png(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.dtype == np.uint16 and image.ndim == 2, path
    return image


def test_classification_writes_a_reference_for_every_sample(tmp_path):
    out = tmp_path / "ntu"
    assert main(["classification", "--out", str(out), "--samples", "2", *TINY]) == 0
    names = sorted(p.name for p in (out / NTU_DEPTH_DIR).iterdir())
    assert len(names) == 2
    for name in names:
        assert read_png(reference_path(out, name)).shape == (24, 32)
    assert sorted(p.stem for p in (out / "reference").iterdir()) == names


@pytest.mark.slow  # 0.4 CPU s
def test_detection_references_can_be_written_alone_for_an_older_tree(tmp_path, capsys):
    out = tmp_path / "pku"
    argv = ["detection", "--out", str(out), "--videos", "2", "--actions", "1", "1", *TINY]
    assert main(argv) == 0
    names = sorted(p.name for p in (out / PKU_DEPTH_DIR).iterdir())
    written = {n: reference_path(out, n).read_bytes() for n in names}
    assert len(written) == 2 and all(
        read_png(reference_path(out, n)).shape == (24, 32) for n in names
    )
    for path in (out / "reference").iterdir():  # a tree from before gd-synth wrote them
        path.unlink()
    assert main([*argv, "--references-only"]) == 0
    assert {n: reference_path(out, n).read_bytes() for n in names} == written
    assert "wrote 2 references" in capsys.readouterr().out
    # other generating options would give other cameras: refused, naming the option
    assert main([*argv, "--references-only", "--seed", "7"]) == 2
    assert "seed 0 there, 7 here" in capsys.readouterr().err
    assert main([*argv[:2], str(tmp_path / "none"), *argv[3:], "--references-only"]) == 2
    assert "generate the tree first" in capsys.readouterr().err
