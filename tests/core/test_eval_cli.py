"""gd-eval's commands on real files: `split` (the test split's ground truth), `plot` (a
timeline PNG), and the help's example scoring the test split."""

import json

import cv2
import pytest

from core import evaluate

SPLIT = "Training videos: \n0001-L, 0001-M, \nValidataion videos: \n0002-L, 0002-M, \n"


@pytest.fixture
def tree(tmp_path):
    """A PKU-MMD tree: two training and two test videos, label files written by hand."""
    root = tmp_path / "pku"
    (root / "split").mkdir(parents=True)
    (root / "split" / "cross-subject.txt").write_text(SPLIT)
    (root / "split" / "cross-view.txt").write_text(
        "Training videos: \n0001-L, 0002-M, \nValidataion videos: \n0001-M, 0002-L, \n"
    )
    (root / "label").mkdir()
    for name in ("0001-L", "0001-M", "0002-L", "0002-M"):
        (root / "label" / f"{name}.txt").write_text(f"1,0,29,2\n2,60,{int(name[3]) * 100},2\n")
    return root


def test_split_copies_the_test_videos_ground_truth(tree, tmp_path, capsys):
    out = tmp_path / "gt-test"
    assert evaluate.main(["split", "--data", str(tree), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0002-L.txt", "0002-M.txt"]
    assert (out / "0002-M.txt").read_text() == "1,0,29,2\n2,60,200,2\n"
    assert (
        capsys.readouterr().out
        == f"wrote the ground truth of 2 cross-subject test videos to {out}\n"
    )
    view = tmp_path / "gt-view"
    assert evaluate.main(["split", "--data", str(tree), "--out", str(view), "--split",
                          "cross-view"]) == 0  # fmt: skip
    assert sorted(p.name for p in view.iterdir()) == ["0001-M.txt", "0002-L.txt"]


def test_split_names_what_is_missing(tree, tmp_path, capsys):
    (tree / "label" / "0002-M.txt").unlink()
    assert evaluate.main(["split", "--data", str(tree), "--out", str(tmp_path / "g")]) == 2
    assert "no label file for ['0002-M.txt']" in capsys.readouterr().err
    assert evaluate.main(["split", "--data", str(tmp_path), "--out", str(tmp_path / "g")]) == 2
    assert "cross-subject.txt: split file not found" in capsys.readouterr().err


def test_scoring_the_split_counts_only_test_videos(tree, tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    evaluate.main(["split", "--data", str(tree), "--out", str(gt)])
    pred.mkdir()
    for name in ("0002-L", "0002-M"):  # perfect detections of the test videos only
        (pred / f"{name}.txt").write_text((tree / "label" / f"{name}.txt").read_text())
    capsys.readouterr()
    assert evaluate.main(["--gt", str(gt), "--pred", str(pred), "--json"]) == 0
    result = capsys.readouterr()
    assert json.loads(result.out)["map_action"]["0.5"] == 1.0 and result.err == ""
    # The whole label folder has two videos without predictions: the warning says so.
    evaluate.main(["--gt", str(tree / "label"), "--pred", str(pred), "--json"])
    assert "2 of 4 videos" in capsys.readouterr().err


def test_help_example_scores_the_test_split(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    help_text = capsys.readouterr().out
    assert "gd-eval split --data runs/quick/data/pku --out runs/quick/gt-test" in help_text
    assert "gd-eval --gt runs/quick/gt-test --pred runs/quick/predictions" in help_text
    assert "--gt data/PKU-MMD/label" not in help_text


@pytest.mark.slow
def test_plot_draws_the_timeline_and_counts_hits(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    (gt / "v.txt").write_text("1,30,89,2\n2,150,209,2\n")  # [1, 3) s and [5, 7) s at 30 fps
    # A hit (tIoU 50/60 with class 1), its repeat (taken), a wrong class over class 2's span.
    (pred / "v.txt").write_text("1,30,79,0.9\n1,30,89,0.5\n1,150,209,0.8\n")
    classes = tmp_path / "gd-synth.json"
    classes.write_text(json.dumps({"classes": ["drink water", "sit down"]}))
    out = tmp_path / "timeline.png"
    argv = ["plot", "--gt", str(gt), "--pred", str(pred), "--video", "v", "--out", str(out)]
    assert evaluate.main([*argv, "--classes", str(classes)]) == 0
    assert capsys.readouterr().out == (
        f"wrote {out}: 1 of 3 detections hit, 1 of 2 true actions found (tIoU >= 0.5)\n"
    )
    image = cv2.imread(str(out))
    assert image is not None and image.shape[1] > image.shape[0] > 100


def test_plot_errors_name_the_problem(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    argv = ["plot", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--out",
            str(tmp_path / "t.png")]  # fmt: skip
    assert evaluate.main([*argv, "--video", "nope"]) == 2
    assert "no nope.txt" in capsys.readouterr().err
    (tmp_path / "gt" / "v.txt").write_text("1,0,9\n")
    assert evaluate.main([*argv, "--video", "v", "--fps", "0"]) == 2
    assert "--fps must be positive" in capsys.readouterr().err
