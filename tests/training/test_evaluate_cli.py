"""`gd-train evaluate` refuses to overwrite a detector's figures with another config's."""

import json

import pytest

from tests.helpers.caches import TINY, make_detection_cache
from training.cli import main

DETECTOR = [*TINY, "transfer=false", "target.modalities=[depth]", "target.activity_threshold=0.3"]


@pytest.mark.slow
def test_evaluate_with_another_target_config_is_refused_unless_forced(tmp_path, capsys):
    make_detection_cache(tmp_path / "cache" / "pku")  # the default target cache location
    workdir = ["--workdir", str(tmp_path)]
    assert main(["detect", *workdir, *DETECTOR]) == 0
    assert main(["evaluate", *workdir, *DETECTOR]) == 0  # the config it was trained with
    metrics = tmp_path / "metrics.json"
    figures = json.loads(metrics.read_text())
    capsys.readouterr()

    other = [*DETECTOR, "target.activity_threshold=0.9"]
    assert main(["evaluate", *workdir, *other]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gd-train: error:") and "another target config" in err
    assert "target.activity_threshold: 0.3 -> 0.9" in err and "--force" in err
    assert json.loads(metrics.read_text()) == figures  # untouched

    assert main(["evaluate", *workdir, *other, "--force"]) == 0
    forced = json.loads(metrics.read_text())
    assert forced["detection"]["modality"] == "depth"
