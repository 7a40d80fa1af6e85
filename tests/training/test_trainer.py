import csv
import json

import numpy as np
import pytest
import torch

from core.labels import read_label_dir
from core.postprocess import segment
from tests.helpers.caches import TINY, make_classification_cache, make_detection_cache, spec_of
from training.checkpoint import load_checkpoint
from training.config import load_config
from training.distillation import GraphDistillation
from training.evaluate import (
    agreement,
    detection_rows,
    fit_figures,
    grid_labels,
    ground_truth,
    map_figures,
)
from training.loop import Interrupted
from training.run import run_evaluate, run_stage
from training.stages import TrainingError, build_detect, build_pretrain

MODALITIES = ["source.modalities=[depth,flow,jjd]", "target.modalities=[depth,flow,jjd]"]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    make_classification_cache(root / "ntu")
    make_detection_cache(root / "pku")
    return root


def config(caches, *overrides):
    paths = [f"source.cache={caches / 'ntu'}", f"target.cache={caches / 'pku'}"]
    return load_config(None, None, [*TINY, *MODALITIES, *paths, *overrides])


def weights(path):
    return load_checkpoint(path).model


@pytest.fixture(scope="module")
def pretrained(caches, tmp_path_factory):
    """The workdir of one pre-training on `config(caches)` and its metrics: the tests that only
    read what it wrote share it."""
    workdir = tmp_path_factory.mktemp("pretrained")
    return workdir, run_stage(config(caches), workdir, "pretrain")


def test_pretrain_writes_deployable_classifiers_metrics_and_skips_when_done(caches, pretrained):
    workdir, metrics = pretrained
    for m in ("depth", "flow", "jjd"):
        ckpt = load_checkpoint(workdir / "pretrain" / f"{m}.pt")
        assert ckpt.task == "classification" and ckpt.architecture.modality == m
        assert ckpt.classes == ["class_1", "class_2", "class_3"]
        assert set(ckpt.metrics["test_accuracy"]) == {"depth", "flow", "jjd"}
        assert ckpt.provenance["config"]["model"]["width"] == 4
        assert ckpt.clip.mean == pytest.approx(0.4)  # the cache's depth statistics
        ckpt.network()  # rebuilds
    assert 0 <= metrics["test_accuracy"]["depth"] <= 1
    rows = list(csv.DictReader((workdir / "pretrain" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [r["graph"] for r in rows] == ["uniform", "learned"]  # the curriculum
    assert rows[1]["regularizer/depth"] and not rows[0]["regularizer/depth"]
    assert list((workdir / "pretrain" / "tb").iterdir())
    # finished: not run again
    before = (workdir / "pretrain" / "depth.pt").stat().st_mtime_ns
    again = run_stage(config(caches), workdir, "pretrain")
    assert again["test_accuracy"] == metrics["test_accuracy"]
    assert (workdir / "pretrain" / "depth.pt").stat().st_mtime_ns == before


@pytest.mark.slow
def test_prior_is_set_from_validation_accuracy_when_the_curriculum_reaches_it(pretrained):
    state = torch.load(pretrained[0] / "pretrain" / "state.pt", weights_only=False)
    accuracy = state["modules"]["distiller"]["accuracy"]
    history = state["history"]
    # the prior was measured before epoch 2 (the first learned one): validation accuracies of
    # the networks after epoch 1, which epoch 1's row recorded
    expected = [history[0][f"val_acc/{m}"] for m in ("depth", "flow", "jjd")]
    np.testing.assert_allclose(accuracy.numpy(), expected)


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "steps"), [("pretrain", 3), ("detect", 5)])
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(caches, tmp_path, stage, steps):
    # `steps` batches an epoch, a checkpoint after step `steps - 1` (one mid-epoch checkpoint an
    # epoch, each a torch.save of the whole state): killed after the last step of epoch 2,
    # before its end-of-epoch checkpoint, the run resumes mid-epoch 2 and redoes that step.
    # jjd's GRU has dropout, so the restored RNG state matters.
    cfg = config(
        caches, f"train.save_every={steps - 1}", "transfer=false", "source.epochs=3",
        "target.epochs=3", "source.batch_size=2", "target.batch_size=2",
    )  # fmt: skip
    run_stage(cfg, tmp_path / "unbroken", stage)
    with pytest.raises(Interrupted):
        run_stage(cfg, tmp_path / "killed", stage, stop_after=2 * steps)
    state = torch.load(tmp_path / "killed" / stage / "state.pt", weights_only=False)
    assert (state["epoch"], state["step"]) == (1, steps - 1)  # mid-epoch 2 (0-based 1)
    with pytest.raises(TrainingError, match="--resume"):
        run_stage(cfg, tmp_path / "killed", stage)
    run_stage(cfg, tmp_path / "killed", stage, resume=True)

    # One thread (TINY's train.threads=1): the resumed run repeats the same float32 operations in
    # the same order, so its weights equal the unbroken run's to the bit; any difference is
    # state the resume lost.
    for m in cfg.source.modalities:
        a = weights(tmp_path / "unbroken" / stage / f"{m}.pt")
        b = weights(tmp_path / "killed" / stage / f"{m}.pt")
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{m} {key}")
    read = lambda run: [  # noqa: E731
        {k: v for k, v in r.items() if k != "seconds"}
        for r in csv.DictReader((tmp_path / run / stage / "metrics.csv").open())
    ]
    assert read("killed") == read("unbroken")


def test_resume_refuses_another_config(caches, tmp_path):
    cfg = config(caches, "train.save_every=1")
    with pytest.raises(Interrupted):
        run_stage(cfg, tmp_path, "pretrain", stop_after=1)
    other = config(caches, "train.save_every=1", "source.lr=0.5")
    with pytest.raises(TrainingError, match=r"source\.lr: 0\.01 -> 0\.5"):
        run_stage(other, tmp_path, "pretrain", resume=True)


@pytest.mark.slow
def test_transfer_initialises_the_target_encoders_from_the_source_classifiers(
    caches, pretrained, tmp_path
):
    cfg = config(caches)
    with pytest.raises(TrainingError, match="run gd-train pretrain first"):
        build_detect(cfg, tmp_path)
    workdir = pretrained[0]
    stage = build_detect(cfg, workdir)[-1]
    for m in ("depth", "flow", "jjd"):
        source = weights(workdir / "pretrain" / f"{m}.pt")
        for key, value in stage.nets[m].encoder.state_dict().items():
            torch.testing.assert_close(value, source[f"encoder.{key}"], rtol=0, atol=0)
    scratch = build_detect(config(caches, "transfer=false"), workdir)[-1]
    source = weights(workdir / "pretrain" / "depth.pt")["encoder.conv1.weight"]
    assert not torch.equal(scratch.nets["depth"].encoder.conv1.weight, source)


@pytest.mark.slow
def test_student_mode_trains_teachers_alone_then_the_student_from_frozen_teachers(caches, tmp_path):
    cfg = config(caches, "distill.mode=student", "distill.student=depth")
    teachers_phase, student_phase = build_pretrain(cfg, tmp_path)
    assert teachers_phase.trained == ["flow", "jjd"] and teachers_phase.distiller is not None
    assert student_phase.trained == ["depth"]
    assert student_phase.distiller.students == (0,)  # depth is modality 0
    run_stage(cfg, tmp_path, "pretrain")
    teachers = torch.load(tmp_path / "pretrain" / "teachers-state.pt", weights_only=False)
    for m in ("flow", "jjd"):  # unchanged by the student phase
        final = weights(tmp_path / "pretrain" / f"{m}.pt")
        for key, value in final.items():
            torch.testing.assert_close(
                value, teachers["modules"]["nets"][f"{m}.{key}"], rtol=0, atol=0
            )


@pytest.mark.slow
def test_detect_then_evaluate_writes_predictions_and_metrics(caches, tmp_path):
    cfg = config(caches, "transfer=false", "train.graphs=true")
    run_stage(cfg, tmp_path, "detect")
    ckpt = load_checkpoint(tmp_path / "detect" / "depth.pt")
    assert ckpt.task == "detection" and ckpt.classes == ["background", "class_1", "class_2"]
    assert ckpt.clip.clip_len == 4 and ckpt.clip.std == pytest.approx(0.2)
    metrics = run_evaluate(cfg, tmp_path)
    assert set(metrics["detection"]["map_action"]) == {"0.1", "0.3", "0.5"}
    agree = metrics["detection"]["agreement_with"]
    assert set(agree) == {"flow", "jjd"} and all(0 <= a <= 1 for a in agree.values())
    fit = metrics["detection"]["training_fit"]
    assert set(fit) == {"depth", "flow", "jjd"}
    for figures in fit.values():
        assert 0 <= figures["clip_accuracy"] <= 1 and 1 / 3 <= figures["mean_top_probability"] <= 1
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    predictions = read_label_dir(tmp_path / "predictions", need_confidence=True)
    assert sorted(predictions) == ["0003-L", "0003-M"]  # the test videos
    assert load_checkpoint(tmp_path / "detect" / "depth.pt").metrics["test"] == metrics["detection"]
    pngs = sorted((tmp_path / "graphs" / "detect").glob("*.png"))
    assert pngs and pngs[0].read_bytes()[:4] == b"\x89PNG"
    graphs = json.loads((tmp_path / "graphs" / "detect" / "graphs.json").read_text())
    for entry in graphs["classes"].values():  # each student's weights: a distribution
        np.testing.assert_allclose(np.sum(entry["graph"], axis=1), 1.0, rtol=1e-5)


def test_agreement_counts_clips_with_the_same_argmax_over_all_videos():
    eye = np.eye(3)
    a = {"v1": eye[[0, 1, 2, 2]], "v2": eye[[1]]}
    b = {"v1": eye[[0, 1, 0, 0]], "v2": eye[[1]]}
    assert agreement(a, b) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="v2: clip grids differ"):
        agreement(a, {**b, "v2": eye[[1, 1]]})


def test_evaluation_of_oracle_probabilities_is_perfect(tmp_path):
    """The evaluation path (segments -> label rows -> PKU-MMD mAP) scores ground-truth clip
    labels as perfect detections at tIoU 0.5."""
    cache = make_detection_cache(tmp_path / "d")
    spec = spec_of(cache)
    test = [i for i, s in enumerate(cache.samples) if s.info["subset"] == "test"]
    rows = {}
    for i in test:
        labels = grid_labels(cache, i, spec, 15)
        rows[cache.samples[i].name] = detection_rows(np.eye(3)[labels], spec, 0.4)
        assert [s.class_id for s in segment(np.eye(3)[labels])] == [1, 2]
    figures = map_figures(ground_truth(cache, test), rows, 2)
    assert figures["map_action"]["0.5"] == 1.0


def test_fit_figures_say_how_right_and_how_sure_a_detector_is(tmp_path):
    cache = make_detection_cache(tmp_path / "d")
    spec = spec_of(cache)
    i = next(i for i, s in enumerate(cache.samples) if s.info["subset"] == "test")
    labels = grid_labels(cache, i, spec, 15)
    sure = np.eye(3)[labels]
    name = cache.samples[i].name
    assert fit_figures(cache, {name: sure}, spec) == {"clip_accuracy": 1.0,
                                                      "mean_top_probability": 1.0}  # fmt: skip
    unsure = 0.5 * sure + 0.5 / 3  # still right, half as sure
    figures = fit_figures(cache, {name: unsure[:, [1, 2, 0]]}, spec)  # every argmax wrong
    assert figures["clip_accuracy"] == 0.0
    assert figures["mean_top_probability"] == pytest.approx(0.5 + 0.5 / 3)


def test_missing_cache_and_modality_are_clear_errors(caches, tmp_path):
    with pytest.raises(TrainingError, match="run gd-prep"):
        run_stage(config(caches, f"source.cache={tmp_path / 'nothing'}"), tmp_path, "pretrain")
    with pytest.raises(TrainingError, match=r"source\.modalities.*no \['rgb'\]"):
        run_stage(config(caches, "source.modalities=[depth,rgb]"), tmp_path, "pretrain")


def test_graph_distiller_uses_the_config(caches, tmp_path):
    cfg = config(caches, "distill.graph=prior", "distill.alpha=3", "distill.lambda_repr=2")
    stage = build_pretrain(cfg, tmp_path)[-1]
    gd = stage.distiller
    assert isinstance(gd, GraphDistillation) and gd.alpha == 3 and gd.lambda_repr == 2
    assert stage.curriculum.graph_kind(0).value == "uniform"
    assert stage.curriculum.graph_kind(1).value == "prior"
    uniform = build_pretrain(config(caches, "distill.graph=uniform"), tmp_path)[-1]
    assert uniform.curriculum.graph_kind(0).value == "uniform"
    alone = build_pretrain(config(caches, "source.modalities=[depth]"), tmp_path)[-1]
    assert alone.distiller is None
