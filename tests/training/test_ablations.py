import contextlib
import json
import sys
from pathlib import Path
from typing import IO

import pytest

from tests.helpers.caches import TINY, make_classification_cache, make_detection_cache
from training import ablations
from training import cli as training_cli
from training.ablations import TABLES, Plan, mean_std, run_name
from training.config import load_config


def plan(tables=("table3b", "table4", "diagnosis", "kl"), seeds=(0, 1)) -> Plan:
    return Plan(Path("c"), Path("out"), list(seeds), list(tables), 0.25, 1, ("model.width=8",))


@pytest.mark.slow
def test_every_planned_command_is_a_valid_gd_train_config():
    jobs = plan().pretrains() + plan().detections()
    assert len(jobs) == 2 * 2 + 2 * len(plan().rows())
    for _, commands in jobs:
        for cmd in commands:
            i = cmd.index("--workdir")
            cfg = load_config(cmd[cmd.index("--preset") + 1], None, cmd[i + 2 :])
            assert cfg.target.mini == 0.25 and cfg.model.width == 8


def test_rows_with_the_same_training_share_one_run_and_others_do_not():
    learned3b = TABLES["table3b"][3]
    last4 = TABLES["table4"][4]
    assert run_name(learned3b) == run_name(last4) == run_name(TABLES["diagnosis"][0])
    names = [run_name(r) for r in plan().rows()]
    assert len(names) == len(set(names)) == 16


@pytest.mark.parametrize(
    ("label", "want"),
    [
        ("trg only", {"transfer": False, "modalities": ["depth"], "source": None}),
        ("src + trg", {"transfer": True, "modalities": ["depth"], "source": ["depth"]}),
        ("src w/ PIs + trg", {"transfer": True, "modalities": ["depth"], "source": "quick"}),
        ("src + trg w/ PIs", {"transfer": True, "modalities": "quick", "source": ["depth"]}),
        ("src w/ PIs + trg w/ PIs", {"transfer": True, "modalities": "quick", "source": "quick"}),
    ],
)
def test_table4_rows_put_the_privileged_modalities_where_the_paper_does(label, want):
    quick = load_config("quick").source.modalities
    p = plan(["table4"], [0])
    (row,) = [r for r in TABLES["table4"] if r.label == label]
    (cmds,) = [c for d, c in p.detections() if d == p.run_dir(0, row)]
    cfg = load_config("quick", None, cmds[0][cmds[0].index("--workdir") + 2 :])
    assert cfg.transfer == want["transfer"]
    assert cfg.target.modalities == (quick if want["modalities"] == "quick" else want["modalities"])
    if want["source"] is None:
        return
    pretrain = Path(cfg.transfer_from).parent
    (src,) = [c for d, c in p.pretrains() if d == pretrain]
    source = load_config("quick", None, src[0][src[0].index("--workdir") + 2 :])
    assert source.source.modalities == (quick if want["source"] == "quick" else want["source"])


def test_mean_and_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_std([5.0]) == (5.0, 0.0)


def test_missing_caches_are_a_clear_error(tmp_path, capsys):
    assert ablations.main(["--caches", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "is not a gd-prep cache" in capsys.readouterr().err


def in_process(cmd: list[str], log: IO[str]) -> int:
    """`ablations.run_command` for a `python -m training.cli ...` command, without the process."""
    assert cmd[:3] == [sys.executable, "-m", "training.cli"], cmd
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        return training_cli.main(cmd[3:])


@pytest.mark.slow
def test_a_tiny_sweep_runs_summarizes_and_resumes(tmp_path, capsys, monkeypatch):
    # Table 4's first and last rows: no transfer, and transfer from the pre-training with PIs;
    # 1 pre-training + 2 detections instead of 2 + 5 (the other rows only change overrides,
    # which test_table4_rows_put_the_privileged_modalities_where_the_paper_does checks).
    two_rows = [TABLES["table4"][0], TABLES["table4"][-1]]
    monkeypatch.setitem(TABLES, "table4", two_rows)
    # Each planned gd-train command through the CLI's own main, in this process: a process of
    # its own would only add its start (torch's import: about 5 CPU s a command, 5 commands).
    # One run at a time (--parallel 1), as the redirected output is this process's. gd-train's
    # main in processes of its own: tests/training/test_ddp.py (under torchrun).
    monkeypatch.setattr(ablations, "run_command", in_process)
    make_classification_cache(tmp_path / "cache" / "ntu")
    make_detection_cache(tmp_path / "cache" / "pku")
    modalities = ["source.modalities=[depth,flow,jjd]", "target.modalities=[depth,flow,jjd]"]
    # One epoch a stage: the sweep's running, summary and resuming are what is tested here.
    one_epoch = ["source.epochs=1", "source.uniform_epochs=0", "source.lr_steps=[]",
                 "target.epochs=1", "target.uniform_epochs=0"]  # fmt: skip
    argv = ["--caches", str(tmp_path), "--out", str(tmp_path / "sweep"), "--seeds", "3",
            "--tables", "table4", "--target-mini", "1", "--parallel", "1",
            "--plot", str(tmp_path / "t4.png"),
            "--set", *TINY, *modalities, *one_epoch]  # fmt: skip
    assert ablations.main(argv) == 0
    out = capsys.readouterr().out
    assert "| trg only |" in out and "| src w/ PIs + trg w/ PIs |" in out
    assert "fit their training videos" in out
    assert "±" not in out.split("## table4")[1].split("\n", 1)[1]  # one seed: no spread
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    rows = summary["table4"]
    assert [r["row"] for r in rows] == [r.label for r in TABLES["table4"]]
    for r in rows:  # one seed: the mean is that run's figure
        run = tmp_path / "sweep" / "seed3" / r["run"]
        det = json.loads((run / "metrics.json").read_text())["detection"]
        assert r["seeds"] == [3]
        assert r["mean_std"]["0.5"] == pytest.approx((100 * det["map_action"]["0.5"], 0.0))
        shown = (run / "command.txt").read_text()
        assert "python -m training.cli detect --resume --preset quick" in shown
    cfg = json.loads((tmp_path / "sweep" / "seed3" / rows[0]["run"] / "metrics.json").read_text())
    assert set(cfg["detection"]["other_modalities_map_action"]) == set()  # trg only: depth alone
    assert (tmp_path / "t4.png").read_bytes()[:4] == b"\x89PNG"
    assert ablations.main(argv) == 0  # everything finished: nothing runs again
    again = capsys.readouterr().out  # 1 pre-training, then 2 detections
    assert "1 of 1 done already; running 0" in again and "2 of 2 done already; running 0" in again
