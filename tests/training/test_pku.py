"""PKU-MMD phase 1: split files, label arrays, mini subsets, official folder names, loaders."""

import numpy as np
import pytest

from synth import formats
from training.datasets import DatasetFormatError, PKUMMDDataset
from training.datasets.pku import read_pku_split

VIDEOS = [f"{n:04d}-{v}" for n in (2, 3, 4, 5) for v in "LMR"]


def write_video(root, name, seed=0, depth=None, rgb=None):
    rng = np.random.default_rng(seed)
    joints = rng.uniform(-1, 1, (6, 2, 25, 3)).astype(np.float32)
    tracked = np.ones((6, 2), bool)
    segments = [(1 + seed % 51, 0, 2), (7, 3, 5)]
    formats.write_pku_video(root, name, joints, tracked, segments, depth, rgb)
    return joints


@pytest.fixture
def tree(tmp_path):
    for seed, name in enumerate(VIDEOS):
        write_video(tmp_path, name, seed)
    subject_train = [v for v in VIDEOS if not v.startswith("0005")]
    subject_test = [v for v in VIDEOS if v.startswith("0005")]
    view_train = [v for v in VIDEOS if v[-1] in "MR"]
    view_test = [v for v in VIDEOS if v[-1] == "L"]
    formats.write_pku_splits(tmp_path, (subject_train, subject_test), (view_train, view_test))
    return tmp_path


def names(dataset):
    return [video.name for video in dataset]


def test_cross_subject_and_cross_view_membership(tree):
    assert names(PKUMMDDataset(tree, "cross-subject", "test")) == ["0005-L", "0005-M", "0005-R"]
    assert len(PKUMMDDataset(tree, "cross-subject", "train")) == 9
    view_test = PKUMMDDataset(tree, "cross-view", "test")
    assert names(view_test) == ["0002-L", "0003-L", "0004-L", "0005-L"]
    assert {video.view for video in PKUMMDDataset(tree, "cross-view", "train")} == {"M", "R"}


def test_labels_are_read_as_arrays(tree):
    video = PKUMMDDataset(tree, "cross-subject", "test")[0]  # 0005-L, seed 9
    np.testing.assert_array_equal(video.labels, [[10, 0, 2, 2], [7, 3, 5, 2]])


def test_mini_keeps_a_fraction_of_training_and_the_whole_test_set(tree):
    mini = names(PKUMMDDataset(tree, "cross-view", "train", mini=0.25, seed=1))
    assert len(mini) == 2 and mini == sorted(mini)
    assert mini == names(PKUMMDDataset(tree, "cross-view", "train", mini=0.25, seed=1))
    assert set(mini) < set(names(PKUMMDDataset(tree, "cross-view", "train")))
    assert len(PKUMMDDataset(tree, "cross-view", "test", mini=0.25)) == 4


def test_loaders(tmp_path):
    depth = np.random.default_rng(0).integers(0, 4000, (6, 4, 6), dtype=np.uint16)
    rgb = np.zeros((6, 16, 16, 3), np.uint8)
    joints = write_video(tmp_path, "0002-M", depth=depth, rgb=rgb)
    formats.write_pku_splits(tmp_path, (["0002-M"], []), (["0002-M"], []))
    (video,) = PKUMMDDataset(tmp_path)
    np.testing.assert_allclose(video.load_skeleton(), joints, atol=5e-7)
    assert np.array_equal(video.load_depth(), depth)
    assert video.load_rgb().shape == (6, 16, 16, 3)


def test_official_archive_folder_names(tree):
    (tree / "label").rename(tree / "Train_Label_PKU_final")
    (tree / "Data").mkdir()
    (tree / "skeleton").rename(tree / "Data" / "PKU_Skeleton_Renew")
    (tree / "split").rename(tree / "Split")
    video = PKUMMDDataset(tree, "cross-view", "test")[0]
    assert video.load_skeleton().shape == (6, 2, 25, 3)
    assert video.rgb_path == tree / "rgb" / "0002-L.avi"


def test_missing_files_are_named(tree):
    (tree / "label" / "0005-L.txt").unlink()
    with pytest.raises(FileNotFoundError, match="0005-L.txt"):
        PKUMMDDataset(tree, "cross-subject", "test")
    video = PKUMMDDataset(tree, "cross-view", "train")[0]
    with pytest.raises(FileNotFoundError, match="0002-M"):
        video.load_depth()
    with pytest.raises(FileNotFoundError, match="cross-view.txt"):
        PKUMMDDataset(tree / "elsewhere", "cross-view")


def test_label_outside_51_classes(tree):
    (tree / "label" / "0005-L.txt").write_text("52,0,3,1\n")
    with pytest.raises(DatasetFormatError, match="0005-L.txt.*52"):
        PKUMMDDataset(tree, "cross-subject", "test")


def test_split_file_parsing(tmp_path):
    path = tmp_path / "cross-subject.txt"
    path.write_text("Training videos: \r\n0002-L, 0002-M\r\nValidataion videos: \r\n0003-L, \r\n")
    assert read_pku_split(path) == (["0002-L", "0002-M"], ["0003-L"])
    path.write_text("Training videos: \n0002-L, \n")
    with pytest.raises(DatasetFormatError, match="4 lines"):
        read_pku_split(path)
    path.write_text("Training videos: \n0002-L, 2-M, \nValidataion videos: \n\n")
    with pytest.raises(DatasetFormatError, match="cross-subject.txt:2: '2-M'"):
        read_pku_split(path)
    path.write_text("T\n0002-L, \nV\n0002-L, \n")
    with pytest.raises(DatasetFormatError, match="both"):
        read_pku_split(path)
