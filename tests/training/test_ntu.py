"""NTU RGB+D listing, benchmark splits, missing-skeleton list, mini subsets and loaders."""

import numpy as np
import pytest

from synth import formats
from training.datasets import DatasetFormatError, NTUDataset
from training.datasets.ntu import missing_skeleton_names, parse_ntu_name

MISSING = "S001C002P005R002A008"  # first name of the published list


def write_skeleton(root, name, seed=0):
    rng = np.random.default_rng(seed)
    joints = rng.uniform(-1, 1, (3, 1, 25, 3)).astype(np.float32)
    xy = rng.uniform(0, 500, (3, 1, 25, 2)).astype(np.float32)
    formats.write_ntu_sample(root, name, joints, np.ones((3, 1), bool), xy, xy)
    return joints


@pytest.fixture
def tree(tmp_path):
    names = [
        "S001C001P001R001A001",  # performer 1: xsub train; camera 1: xview test; odd setup
        "S001C002P003R001A002",  # performer 3: xsub test; camera 2: xview train
        "S002C003P002R002A060",  # performer 2: train; camera 3: train; even setup
        "S017C001P038R001A010",  # performer 38: train
        "S018C001P045R001A061",  # NTU 120 only (setup 18, action 61); performer 45: train
        "S019C002P041R001A001",  # NTU 120 only; performer 41: test
        MISSING,
    ]
    for i, name in enumerate(names):
        write_skeleton(tmp_path, name, seed=i)
    (tmp_path / "nturgb+d_skeletons" / "README.txt").write_text("not a sample")
    return tmp_path


def names(dataset):
    return [sample.name for sample in dataset]


def test_cross_subject_60(tree):
    assert names(NTUDataset(tree, 60, "xsub", "train")) == [
        "S001C001P001R001A001",
        "S002C003P002R002A060",
        "S017C001P038R001A010",
    ]
    assert names(NTUDataset(tree, 60, "xsub", "test")) == ["S001C002P003R001A002"]


def test_cross_view_60(tree):
    assert names(NTUDataset(tree, 60, "xview", "train")) == [
        "S001C002P003R001A002",
        "S002C003P002R002A060",
    ]
    assert names(NTUDataset(tree, 60, "xview", "test")) == [
        "S001C001P001R001A001",
        "S017C001P038R001A010",
    ]


def test_ntu120_cross_subject_and_cross_setup(tree):
    assert "S018C001P045R001A061" in names(NTUDataset(tree, 120, "xsub", "train"))
    assert "S019C002P041R001A001" in names(NTUDataset(tree, 120, "xsub", "test"))
    assert names(NTUDataset(tree, 120, "xset", "train")) == [
        "S002C003P002R002A060",
        "S018C001P045R001A061",
    ]
    with pytest.raises(ValueError, match="xset"):
        NTUDataset(tree, 60, "xset")


def test_missing_skeleton_samples_are_skipped_unless_asked(tree):
    everything = names(NTUDataset(tree, 60, "xview", "train")) + names(
        NTUDataset(tree, 60, "xview", "test")
    )
    assert MISSING not in everything
    kept = NTUDataset(tree, 60, "xview", "train", skip_missing_skeletons=False)
    assert MISSING in names(kept)


def test_published_missing_skeleton_lists():
    ntu60, ntu120 = missing_skeleton_names(60), missing_skeleton_names(120)
    assert len(ntu60) == 302 and len(ntu120) == 535
    assert ntu60 < ntu120
    assert "S032C003P067R002A077" in ntu120  # last line of the NTU RGB+D 120 list


def test_sample_fields_and_labels(tree):
    sample = NTUDataset(tree, 60, "xsub", "train")[1]
    assert (sample.setup, sample.camera, sample.performer) == (2, 3, 2)
    assert (sample.replication, sample.action, sample.label) == (2, 60, 59)
    assert parse_ntu_name("S010C002P033R001A120") == (10, 2, 33, 1, 120)
    with pytest.raises(ValueError):
        parse_ntu_name("S10C2")


def test_mini_subset_of_training_only(tmp_path):
    for performer in (1, 2, 4, 5, 8, 9, 13, 14):  # training performers
        write_skeleton(tmp_path, f"S001C001P{performer:03d}R001A001")
    for performer in (3, 6):
        write_skeleton(tmp_path, f"S001C001P{performer:03d}R001A001")
    full = names(NTUDataset(tmp_path, 60, "xsub", "train"))
    mini = names(NTUDataset(tmp_path, 60, "xsub", "train", mini=0.5, seed=3))
    assert len(full) == 8 and len(mini) == 4 and set(mini) < set(full)
    assert mini == sorted(mini)
    assert mini == names(NTUDataset(tmp_path, 60, "xsub", "train", mini=0.5, seed=3))
    others = {
        tuple(names(NTUDataset(tmp_path, 60, "xsub", "train", mini=0.5, seed=s))) for s in range(6)
    }
    assert len(others) > 1  # the seed matters
    assert len(NTUDataset(tmp_path, 60, "xsub", "test", mini=0.5)) == 2
    assert len(NTUDataset(tmp_path, 60, "xsub", "train", mini=0.01)) == 1
    with pytest.raises(ValueError, match="mini"):
        NTUDataset(tmp_path, 60, "xsub", "train", mini=1.5)


def test_loaders_and_modality_folders(tmp_path):
    name = "S001C001P001R001A001"
    rng = np.random.default_rng(0)
    joints = rng.uniform(-1, 1, (4, 1, 25, 3)).astype(np.float32)
    xy = rng.uniform(0, 500, (4, 1, 25, 2)).astype(np.float32)
    depth = rng.integers(1, 5000, (4, 6, 8), dtype=np.uint16)
    rgb = np.full((4, 16, 16, 3), 100, np.uint8)
    formats.write_ntu_sample(
        tmp_path, name, joints, np.ones((4, 1), bool), xy, xy, depth, None, rgb
    )
    (sample,) = NTUDataset(tmp_path, 60, "xsub", "train")
    skeleton = sample.load_skeleton()
    assert skeleton.shape == (4, 2, 25, 3)
    np.testing.assert_allclose(skeleton[:, 0], joints[:, 0], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(skeleton[:, 1], skeleton[:, 0])
    assert np.array_equal(sample.load_depth(), depth)
    assert sample.load_rgb().shape == (4, 16, 16, 3)


def test_depth_only_tree_lists_samples_and_names_missing_files(tmp_path):
    name = "S001C002P001R001A003"
    formats.write_depth_pngs(
        tmp_path / "nturgb+d_depth_masked" / name, np.ones((2, 2, 2), np.uint16)
    )
    (sample,) = NTUDataset(tmp_path, 60, "xsub", "train")
    assert sample.load_depth().shape == (2, 2, 2)
    with pytest.raises(FileNotFoundError, match=f"{name}.skeleton"):
        sample.load_skeleton()
    with pytest.raises(FileNotFoundError, match=f"{name}_rgb.avi"):
        sample.load_rgb()


def test_corrupt_skeleton_file_is_named(tmp_path):
    path = tmp_path / "nturgb+d_skeletons" / "S001C001P001R001A001.skeleton"
    path.parent.mkdir()
    path.write_text("3\r\n1\r\n")
    (sample,) = NTUDataset(tmp_path, 60, "xsub", "train")
    with pytest.raises(DatasetFormatError, match="S001C001P001R001A001.skeleton:3"):
        sample.load_skeleton()


def test_empty_root_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nturgb\\+d_skeletons"):
        NTUDataset(tmp_path)
