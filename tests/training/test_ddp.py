"""`torchrun --nproc_per_node=2` (gloo on CPU) trains the same model as one process on the
same global batch: each rank runs its half of every batch, the loss is computed on the
gathered outputs, BatchNorm statistics are synchronized and gradients averaged."""

import threading
from pathlib import Path

import pytest
import torch
from torch.distributed import run as torchrun

from tests.helpers.caches import make_classification_cache, make_detection_cache
from tests.helpers.cli_sequence import joined
from tests.helpers.numerics import reorder_tol
from training.checkpoint import load_checkpoint
from training.config import load_config
from training.run import run_stage
from training.stages import build_pretrain

ROOT = Path(__file__).resolve().parents[2]
MODALITIES = ("depth", "rgb", "flow")  # ResNets only: the skeleton GRUs' dropout draws other
# masks per rank. Three modalities, so the learned graph (epoch 2) is not trivially 1.
# The check is as strict as float summation order allows only where training is well
# conditioned: 64x64 input (BatchNorm sees 4x4 maps at the last stage, not 1x1), a small
# learning rate and a smooth graph softmax (alpha 1); detection, whose Adam steps amplify
# rounding, runs one epoch (its graph learned from the start, the prior from validation).
# With 16x16 input the comparison drifts by 1e-2, and so does one process run with 1 thread
# against 2: the training is chaotic there, not the distribution wrong.
OVERRIDES = [
    "model.width=4", "model.hidden_size=8", "clip.clip_len=4", "clip.clip_step=4",
    "clip.window=3", "clip.window_step=2", f"source.modalities=[{','.join(MODALITIES)}]",
    f"target.modalities=[{','.join(MODALITIES)}]", "source.epochs=2", "source.batch_size=4",
    "source.val_fraction=0", "source.uniform_epochs=1", "source.lr=0.001", "target.epochs=1",
    "target.batch_size=2", "target.val_fraction=0.5", "target.uniform_epochs=0",
    "target.lr_visual=0.0001", "target.lr_sequence=0.0001",
    "distill.graph=learned", "distill.alpha=1", "train.progress=false", "train.graphs=false",
    "train.threads=1",
]  # fmt: skip
# One thread a process, as each rank has on 2 cores: the one-process run on torch's default 2
# threads spun on a busy machine (15 instead of 3 CPU s for the pre-training).
# How far summation order alone moves a weight, relative to the tensor's magnitude: the two runs
# add the same float32 terms in another order (each rank sums its half, then the all-reduce).
# A sum of N terms in another order differs by about sqrt(N) * eps relative to its magnitude
# (tests/helpers/numerics.py); the largest reductions here are BatchNorm statistics over
# N = batch 4 x 64 x 64 = 16384 values, so sqrt(N) * eps = 1.6e-5. Four times that leaves room
# for the few steps that carry it forward, and stays far below the 1e-2 that a wrong
# distribution (unsynchronized BatchNorm, unaveraged gradients) gives. Scaled by the tensor's
# magnitude (running variances reach 3 or more), not a fixed absolute 1e-5, which a Xeon's
# summation order exceeded (1.7e-5 on a running_var of 3.3: 5e-6 relative).
LARGEST_SUM = 4 * 64 * 64


@pytest.mark.numerics
@pytest.mark.slow
def test_two_processes_train_the_same_weights_as_one(tmp_path, monkeypatch):
    make_classification_cache(tmp_path / "ntu", MODALITIES, size=64)
    # 48 kept frames a video (144 source frames: both actions), not 60: fewer windows to train
    make_detection_cache(tmp_path / "pku", MODALITIES, length=48, size=64)
    overrides = [*OVERRIDES, f"source.cache={tmp_path / 'ntu'}", f"target.cache={tmp_path / 'pku'}"]
    cfg = load_config(None, None, overrides)
    # Detection starts from scratch: started from the two pretrain runs' weights (equal to
    # 4e-6), the depth detector drifts apart to 1e-4 by rounding alone.
    stages = (("pretrain", []), ("detect", ["transfer=false"]))
    for stage, extra in stages:
        run_stage(load_config(None, None, [*overrides, *extra]), tmp_path / "one", stage)
    # Both gd-train commands in one torchrun: each rank's process runs `training.cli.main` for
    # one, then the other (tests/helpers/cli_sequence.py), so the rank processes start once.
    commands = [[stage, "--workdir", str(tmp_path / "two"), *overrides, *extra]
                for stage, extra in stages]  # fmt: skip
    argv = [
        "--standalone", "--nproc_per_node=2", "-m", "tests.helpers.cli_sequence", *joined(commands),
    ]  # fmt: skip
    # torchrun's own launcher code, on a thread of this process rather than in a process that
    # would import torch only to start the two ranks (real processes: this interpreter, in the
    # repository). Off the main thread it installs no signal handlers; monkeypatch puts back
    # what it sets in os.environ. Not alongside the reference run: on 2 cores the three
    # processes would slow each other, costing more CPU seconds than the overlap saves.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's default for its ranks
    monkeypatch.setenv("TORCHELASTIC_SIGNALS_TO_HANDLE", "SIGTERM,SIGINT,SIGHUP,SIGQUIT")
    monkeypatch.chdir(ROOT)
    failed: list[BaseException] = []

    def launch() -> None:
        try:
            torchrun.run(torchrun.parse_args(argv))
        except BaseException as e:  # ChildFailedError names the rank; its output is captured
            failed.append(e)

    launcher = threading.Thread(target=launch, daemon=True)  # daemon: a hung rank blocks no exit
    launcher.start()
    launcher.join(timeout=240)
    assert not launcher.is_alive(), "torchrun did not finish in 240 s"
    if failed:
        raise failed[0]

    for stage in ("pretrain", "detect"):
        for m in MODALITIES:
            one = load_checkpoint(tmp_path / "one" / stage / f"{m}.pt").model
            two = load_checkpoint(tmp_path / "two" / stage / f"{m}.pt").model
            assert one.keys() == two.keys()
            for key in one:
                if key.endswith("num_batches_tracked"):
                    assert one[key] == two[key], key
                    continue
                tol = reorder_tol(LARGEST_SUM, one[key].abs().max().item())
                torch.testing.assert_close(
                    two[key], one[key], rtol=0, atol=tol, msg=f"{stage} {m} {key}"
                )

    # and training did move them away from the initial weights
    initial = build_pretrain(cfg, tmp_path / "one")[-1].nets["depth"].state_dict()
    final = load_checkpoint(tmp_path / "one" / "pretrain" / "depth.pt").model
    assert not torch.allclose(initial["encoder.conv1.weight"], final["encoder.conv1.weight"])
