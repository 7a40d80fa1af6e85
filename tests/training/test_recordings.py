"""Site recordings end to end, on real files through librealsense's software device:
`gd-synth recordings` (depth + colour) -> `gd-labels check` -> `gd-prep --dataset
recordings` -> the cache, read by training's own reader, whose depth equals the server's
preprocessing of the same recording and whose RGB is the colour frame nearest in time."""

import json
import shutil
import threading

import numpy as np
import pytest

from clients.record import record_device
from core.clip import DepthPreprocessor, frame_timestamps_us, resample_indices
from core.realsense import COLOR, DEPTH, SoftwareCamera, read_color, read_depth, record
from core.recording_labels import main as labels_main
from core.recording_labels import parse_labels
from synth.cli import main as synth_main
from synth.site import COLOR_LAG_US
from tests.helpers.retraining import GEOMETRY, make_recordings
from training.cache import Cache
from training.data import DetectionWindows, Normalizer, clip_spec, subset_samples
from training.datasets.recordings import split
from training.prep import PrepSettings, fit_rgb, main, prepare

SIZE = (16, 16)  # the model's input: the recordings are 24x32, so depth is reduced


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Three synthetic site recordings with colour, labels.csv and classes.txt (as made)."""
    return make_recordings(tmp_path_factory.mktemp("site"))


def settings(root, modalities=("depth", "rgb", "flow")):
    return PrepSettings(dataset="recordings", root=str(root), modalities=modalities,
                        height=SIZE[0], width=SIZE[1], flow="farneback",
                        split="seeded")  # fmt: skip


@pytest.fixture(scope="module")
def cache(site, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "c"
    summary = prepare(settings(site), out, progress=False)
    assert summary == {"status": "packed", "samples": 3, "skipped": {}}
    return Cache(out)


@pytest.fixture(scope="module")
def played(site):
    """Each recording's depth and colour as librealsense plays them back, read once for the
    tests that compare the cache with them: {name: (depth, color)}."""
    return {p.stem: (read_depth(p), read_color(p)) for p in sorted(site.glob("*.db3"))}


@pytest.mark.slow
def test_synthetic_recordings_hold_depth_and_colour_and_their_labels_check_clean(site, played):
    names = sorted(p.name for p in site.glob("*.db3"))
    assert names == ["site-001.db3", "site-002.db3", "site-003.db3"]
    depth, color = played["site-001"]
    assert color is not None and color.frames.shape[1:] == (30, 40, 3)
    assert np.array_equal(color.timestamps_us, depth.timestamps_us + COLOR_LAG_US)
    classes = str(site / "classes.txt")
    assert labels_main(["check", str(site / "labels.csv"), "--recordings", str(site),
                        "--classes", classes]) == 0  # fmt: skip


@pytest.mark.slow
def test_the_cache_holds_one_detection_sample_per_recording(site, cache):
    assert cache.modalities == ["depth", "rgb", "flow"]
    classes = (site / "classes.txt").read_text().split("\n")[:-1]
    assert cache.meta["classes"] == classes
    segments, _ = parse_labels((site / "labels.csv").read_text())
    for s in cache.samples:
        rows = [x for x in segments if x.recording == f"{s.name}.db3"]
        # Seconds [start, end) -> source frames at 30 fps, end inclusive (PKU-MMD's rows).
        want = [[classes.index(x.label) + 1, round(x.start * 30), round(x.end * 30) - 1, 1]
                for x in rows]  # fmt: skip
        assert s.info["segments"] == want
    # The seeded split: one of three recordings is held out, the same one on every run.
    assert [s.info["subset"] for s in cache.samples].count("test") == 1
    held = [s.name + ".db3" for s in cache.samples if s.info["subset"] == "test"]
    assert held == [n for n, v in split([s.name + ".db3" for s in cache.samples], {}).items()
                    if v == "test"]  # fmt: skip


@pytest.mark.slow
def test_depth_equals_the_servers_preprocessing_of_the_same_recording(played, cache):
    spec = clip_spec(cache, **GEOMETRY)
    norm = Normalizer(cache, "depth", spec)
    for i, s in enumerate(cache.samples):
        trained = norm(cache.frames("depth", i, np.arange(s.length)))[:, 0]
        # The server's upload path: playback, resample_indices, DepthPreprocessor.
        rec = played[s.name][0]
        kept = resample_indices(rec.timestamps_us, spec.kept_fps)
        served = DepthPreprocessor(spec, *rec.frames.shape[1:])(rec.frames[kept])
        assert trained.shape == served.shape == (len(kept), *SIZE)
        assert np.array_equal(trained, served)


@pytest.mark.slow
def test_rgb_is_the_colour_frame_nearest_each_kept_depth_frame(site, played, cache):
    s = settings(site)
    for i, sample in enumerate(cache.samples):
        depth, color = played[sample.name]
        kept_ts = depth.timestamps_us[resample_indices(depth.timestamps_us, s.fps / s.downsample)]
        distance = np.abs(color.timestamps_us[None, :] - kept_ts[:, None])
        nearest = distance.argmin(axis=1)  # the first of equals: ties to the earlier frame
        want = np.stack([fit_rgb(color.frames[j], s) for j in nearest])
        assert np.array_equal(cache.frames("rgb", i, np.arange(sample.length)), want)
        flow = cache.frames("flow", i, np.arange(sample.length))
        assert flow.shape == (sample.length, *SIZE, 2) and np.isfinite(flow).all()


@pytest.mark.slow
def test_training_reads_windows_from_the_cache(cache):
    spec = clip_spec(cache, **GEOMETRY)
    windows = DetectionWindows(cache, subset_samples(cache, "train"), ["depth", "rgb"], spec)
    item = windows[(0, 0)]
    assert item["inputs"]["depth"].shape == (3, 4, *SIZE)
    assert item["inputs"]["rgb"].shape == (3, 12, *SIZE)
    assert item["label"].shape == (3,)


@pytest.mark.slow
def test_corrupt_recordings_are_named_and_skipped(site, tmp_path, capsys):
    root = tmp_path / "site"
    shutil.copytree(site, root)
    (root / "site-002.db3").write_bytes(b"\0" * 4096)  # a copy that broke
    args = ["--dataset", "recordings", "--root", str(root), "--out", str(tmp_path / "c"),
            "--size", "16x16", "--flow", "farneback", "--workers", "1"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr()
    assert "skipped site-002" in out.err
    assert "skipped 1 sample(s)" in out.out and "site-002: " in out.out
    assert [s.name for s in Cache(tmp_path / "c").samples] == ["site-001", "site-003"]
    for name in ("site-001.db3", "site-003.db3"):
        (root / name).write_bytes(b"\0" * 4096)
    shutil.rmtree(tmp_path / "c")
    assert main(args) == 1  # every recording failed
    assert "every sample failed" in capsys.readouterr().err


@pytest.mark.slow
def test_bad_labels_stop_prep_before_any_work(site, tmp_path, capsys):
    root = tmp_path / "site"
    shutil.copytree(site, root)
    with (root / "labels.csv").open("a") as f:
        f.write("site-001.db3,dancing,0.0,0.5\n")
    args = ["--dataset", "recordings", "--root", str(root), "--out", str(tmp_path / "c")]
    assert main(args) == 2
    assert "unknown label 'dancing'" in capsys.readouterr().err
    assert not (tmp_path / "c" / "meta.json").exists()


def test_subset_column_and_depth_only_recordings(tmp_path):
    frames = np.random.default_rng(0).integers(600, 4000, (40, 12, 16)).astype(np.uint16)
    ts = 2_000_000 + np.arange(40) * 33_333
    for name in ("a", "b"):
        record(tmp_path / f"{name}.db3", frames, ts, 30)  # no colour
    (tmp_path / "labels.csv").write_text(
        "recording,label,start,end,subset\na.db3,leaves bed,0.2,0.8,test\nb.db3,new,0,1,train\n"
    )
    args = ["--dataset", "recordings", "--root", str(tmp_path), "--out", str(tmp_path / "c"),
            "--size", "8x8", "--workers", "1"]  # fmt: skip
    assert main(args) == 0  # modalities default to what every recording holds: depth
    cache = Cache(tmp_path / "c")
    assert cache.modalities == ["depth"]
    assert {s.name: s.info["subset"] for s in cache.samples} == {"a": "test", "b": "train"}
    assert cache.meta["classes"] == ["leaves bed", "new"]  # no classes.txt: sorted names
    assert json.loads((tmp_path / "c" / "meta.json").read_text())["settings"]["split"] == "seeded"


ELAN = """<?xml version="1.0" encoding="UTF-8"?>
<ANNOTATION_DOCUMENT FORMAT="3.0" VERSION="3.0">
  <HEADER TIME_UNITS="milliseconds"/>
  <TIME_ORDER>
    <TIME_SLOT TIME_SLOT_ID="ts1" TIME_VALUE="{t0}"/>
    <TIME_SLOT TIME_SLOT_ID="ts2" TIME_VALUE="{t1}"/>
  </TIME_ORDER>
  <TIER LINGUISTIC_TYPE_REF="default-lt" TIER_ID="leaves bed">
    <ANNOTATION><ALIGNABLE_ANNOTATION ANNOTATION_ID="a1" TIME_SLOT_REF1="ts1"
      TIME_SLOT_REF2="ts2"><ANNOTATION_VALUE/></ALIGNABLE_ANNOTATION></ANNOTATION>
  </TIER>
</ANNOTATION_DOCUMENT>
"""


def test_gd_record_then_elan_labels_then_prep(tmp_path, capsys):
    """The site workflow on files gd-record wrote: a software camera streams depth and colour
    into `record_device`, ELAN annotations are imported and checked, and gd-prep caches them."""
    root = tmp_path / "site"
    root.mkdir()
    rng = np.random.default_rng(9)
    n = 45  # 1.5 s at 30 fps
    for name in ("ward-1", "ward-2"):
        camera = SoftwareCamera(32, 24, 30, color_size=(40, 30))
        depth = rng.integers(600, 4000, (n, 24, 32)).astype(np.uint16)
        color = rng.integers(0, 256, (n, 30, 40, 3)).astype(np.uint8)
        ts = frame_timestamps_us(n, 30) + 4_000_000

        stop = threading.Event()

        def feed(camera=camera, depth=depth, color=color, ts=ts, stop=stop):
            for i in range(n):
                camera.push(DEPTH, depth[i], ts[i])
                camera.push(COLOR, color[i], ts[i] + 5_000)
            stop.set()  # as Ctrl-C would

        feeder = threading.Thread(target=feed)
        done = record_device(camera.device, root / f"{name}.db3", color=True, stop=stop,
                             on_start=feeder.start)  # fmt: skip
        feeder.join()
        assert done.frames == 2 * n
        (tmp_path / f"{name}.eaf").write_text(ELAN.format(t0=200, t1=900))
    eafs = [str(tmp_path / f"ward-{i}.eaf") for i in (1, 2)]
    labels = root / "labels.csv"
    assert labels_main(["import", "--from", "elan", *eafs, "--out", str(labels)]) == 0
    assert labels_main(["check", str(labels), "--recordings", str(root)]) == 0
    args = ["--dataset", "recordings", "--root", str(root), "--out", str(tmp_path / "c"),
            "--size", "8x8", "--flow", "farneback", "--workers", "1"]  # fmt: skip
    assert main(args) == 0
    cache = Cache(tmp_path / "c")
    assert cache.modalities == ["depth", "rgb", "flow"] and cache.meta["classes"] == ["leaves bed"]
    assert [s.length for s in cache.samples] == [15, 15]  # 45 frames at 30 fps -> 10 fps
    assert [s.info["segments"] for s in cache.samples] == [[[1, 6, 26, 1]]] * 2  # 0.2-0.9 s
    assert sorted(s.info["subset"] for s in cache.samples) == ["test", "train"]


def test_gd_synth_recordings_refuses_bad_counts(tmp_path, capsys):
    assert synth_main(["recordings", "--out", str(tmp_path), "--count", "0"]) == 2
    assert "need --count >= 1" in capsys.readouterr().err
