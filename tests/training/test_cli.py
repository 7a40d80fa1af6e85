import json

import pytest
import yaml

from tests.helpers.caches import make_classification_cache
from training.cli import main

TINY_MODEL = [
    "model.width=4", "model.hidden_size=8", "clip.clip_len=4", "clip.clip_step=4",
    "clip.window=3", "clip.window_step=2", "train.progress=false", "train.threads=1",
]  # fmt: skip


def test_show_config_prints_the_resolved_yaml(capsys):
    assert main(["show-config", "--preset", "quick", "distill.graph=prior", "target.mini=0.5"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["distill"]["graph"] == "prior" and shown["target"]["mini"] == 0.5
    assert shown["model"]["width"] == 16


def test_help_says_what_quick_shrinks(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["pipeline", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("width 16", "64x64 input", "a few epochs", "Farneback", "paper"):
        assert words in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show-config", "distill.grpah=learned"], "unknown config key 'distill.grpah'"),
        (["show-config", "source.modalities=[depth,sonar]"], "'sonar' is not one of"),
        (["pretrain", "--workdir", "{tmp}"], "source.cache"),
        (["evaluate", "--workdir", "{tmp}"], "no detection checkpoint"),
    ],
)
def test_errors_exit_2_with_a_message_and_no_traceback(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gd-train: error:") and message in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_stage_with_a_state_needs_resume(tmp_path, capsys):
    make_classification_cache(tmp_path / "cache" / "ntu")  # the default cache location
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "state.pt").write_bytes(b"")
    argv = ["pretrain", "--workdir", str(tmp_path), *TINY_MODEL, "source.modalities=[depth]"]
    assert main(argv) == 2
    assert "pass --resume" in capsys.readouterr().err


@pytest.mark.slow
def test_pipeline_from_nothing_to_metrics_json_and_again_with_nothing_redone(tmp_path, capsys):
    # 20 source samples still leave every split (train, validation, test) some; one worker: the
    # worker pools of gd-synth and gd-prep have their own tests (tests/synth/test_generate.py,
    # tests/training/test_prep.py), and forking this process costs more than the tiny jobs.
    argv = [
        "pipeline", "--preset", "quick", "--workdir", str(tmp_path), *TINY_MODEL,
        "synth.samples=20", "synth.videos=6", "synth.size=16x16", "synth.actions=[3, 4]",
        "prep.size=16x16", "prep.workers=1", "source.epochs=1", "source.uniform_epochs=0",
        "target.epochs=1", "target.uniform_epochs=0", "target.val_fraction=0",
        "train.graphs=false",
    ]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["detection"]["map_action"]) == {"0.1", "0.3", "0.5"}
    assert set(metrics["classification"]["test_accuracy"]) == {"depth", "jjd", "jjv"}  # quick's
    assert set(metrics["detection"]["other_modalities_map_action"]) == {"jjd", "jjv"}
    assert {"data", "pretrain", "detect", "evaluate"} <= set(metrics["seconds"])
    for path in ("data/ntu/gd-synth.json", "cache/pku/meta.json", "detect/depth.pt"):
        assert (tmp_path / path).exists(), path
    assert "mAP" in capsys.readouterr().out

    # Everything done: every stage is skipped, so nothing but the run's records is written again.
    def written():
        records = {"metrics.json", "timing.json"}
        return {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.name not in records}

    before = written()
    assert main(argv) == 0
    assert written() == before
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert again["detection"] == metrics["detection"]
