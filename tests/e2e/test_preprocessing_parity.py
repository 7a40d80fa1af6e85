"""Training = serving: one camera-shaped recording reaches the visual encoder bit for bit the
same through `gd-prep` + the training reader, and through the server (upload, a raw stream,
and a stream the Python client reduced to the model's size first), for every `fit`; and with
the person-centric crop, each clip cropped against the camera's empty-room reference (gd-synth's,
read by `gd-prep --person-crop`, PUT to the server for the camera id of the stream and upload).

The recording: a gd-synth detection video rendered with the RealSense D435 4:3 profile at
48x64, written as a PKU-MMD tree (16-bit PNGs, what gd-prep reads) and as a `.db3` through
librealsense (what the server and the clients read). The model takes 24x24, so crop and pad
change the geometry. The tiny ONNX model's visual encoder is wrapped (in this test, not in the
server) to keep a copy of every clip it is given.
"""

import asyncio
import dataclasses
import json

import cv2
import numpy as np
import pytest

from clients.api import Client
from clients.sources import open_file
from core.clip import FITS, frame_timestamps_us
from core.realsense import read_depth, record_depth
from synth.cameras import camera_profile
from synth.formats import write_pku_splits, write_pku_video, write_reference
from synth.generate import detection_shot
from tests.helpers import live
from tests.helpers.crop_bundle import cropped_clips, put_reference, recording_server
from tests.helpers.tiny_bundle import make_bundle
from training.cache import Cache
from training.data import Normalizer, clip_spec, video_inputs
from training.prep import PrepSettings, prepare

MODEL_SIZE = (24, 24)
GEOMETRY = dict(clip_len=4, clip_step=4, window=4, window_step=2)  # the tiny model's
VIDEOS = ("0001-M", "0002-M")  # the same recording as a training and a test video


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """(PKU-MMD root, .db3 path, the camera's empty-room reference) of one 4:3 video."""
    camera = camera_profile("d435-vga")
    size = camera.scaled_size(0.1)
    assert size == (48, 64)
    shot = detection_shot(seed=5, subject=1, camera=1, n_actions=2, size=size,
                          color_size=(16, 16), difficulty=0.5, depth_fov=camera.fov)  # fmt: skip
    rec, reference = shot.film(), shot.reference()
    assert len(rec.depth) >= 90  # at least 7 clips at 10 fps
    root = tmp_path_factory.mktemp("pku")
    for name in VIDEOS:
        write_pku_video(root, name, rec.joints, rec.tracked, rec.segments, depth=rec.depth)
        write_reference(root, name, reference)  # read by --person-crop only
    write_pku_splits(root, (VIDEOS[:1], VIDEOS[1:]), (VIDEOS[:1], VIDEOS[1:]))
    db3 = root / "ward-bed.db3"
    record_depth(db3, rec.depth, frame_timestamps_us(len(rec.depth), rec.fps) + 10**6, rec.fps)
    return root, db3, reference


def served_clips(server: live.LiveServer, recorder, db3, camera_id: str) -> dict[str, np.ndarray]:
    """The encoder's input for the recording uploaded, streamed raw (librealsense playback),
    and streamed by the Python client, each with `camera_id`."""
    response = live.upload(server.url, db3.read_bytes(), filename=db3.name, camera_id=camera_id)
    assert response.status_code == 200, response.text
    assert response.json()["warnings"] == []
    uploaded = recorder.take()

    played = read_depth(db3)  # librealsense playback, as the server's upload path reads it
    messages = live.frame_messages(played.frames, played.timestamps_us)
    hello = live.hello(played.frames.shape[2], played.frames.shape[1], camera_id=camera_id)
    result = asyncio.run(
        live.run_stream(server.ws_url, played.frames, messages=messages, hello_message=hello)
    )
    assert result.close_code == 1000, result.events[-3:]
    assert result.of("warning") == []
    streamed = recorder.take()

    async def client_stream() -> None:
        source = open_file(db3)
        client = Client(server.url, live.TOKEN)
        async for _ in client.stream(source.frames, camera_id, source.fps, flow_control=True):
            pass

    asyncio.run(client_stream())
    return {"upload": uploaded, "stream": streamed, "client": recorder.take()}


@pytest.mark.slow
@pytest.mark.parametrize("fit", FITS)
def test_one_recording_reaches_the_encoder_identically_in_training_and_serving(
    recording, fit, tmp_path, test_settings, monkeypatch
):
    root, db3, _ = recording
    # Training: gd-prep's code path into a cache, then the training reader's clips.
    settings = PrepSettings(dataset="pku", root=str(root), modalities=("depth",),
                            height=MODEL_SIZE[0], width=MODEL_SIZE[1], fit=fit,
                            split="cross-subject")  # fmt: skip
    prepare(settings, tmp_path / "cache", workers=1, progress=False)
    cache = Cache(tmp_path / "cache")
    spec = clip_spec(cache, **GEOMETRY)
    assert spec.fit == fit and 0 < spec.std != 1.0  # the cache's statistics
    trained = video_inputs(cache, cache.index[VIDEOS[1]], Normalizer(cache, "depth", spec), spec)
    assert trained.dtype == np.float32 and trained.shape[1:] == (4, *MODEL_SIZE)
    assert len(trained) >= 7

    # Serving: a model with the cache's clip spec, its encoder's input recorded.
    bundle = make_bundle(tmp_path / "bundle", spec=spec)
    server_settings = dataclasses.replace(test_settings, model=bundle.root)
    server, recorder = recording_server(server_settings, monkeypatch)
    try:
        served = served_clips(server, recorder, db3, "ward-bed")
    finally:
        server.stop()

    for path, clips in served.items():  # the client's: reduced to the model's size first
        np.testing.assert_array_equal(clips, trained, err_msg=path)
    invalid = (0 - np.float32(spec.mean)) / np.float32(spec.std)
    if fit == "pad":  # 48x64 -> 18x24 in rows 3..21: three invalid rows above and below
        assert (trained[..., [0, 1, 2, 21, 22, 23], :] == invalid).all()
        assert (trained[..., 3:21, :] != invalid).any()


@pytest.mark.slow
def test_a_non_square_cropping_model_goes_from_gd_synth_to_the_server(tmp_path, test_settings):
    """gd-synth (a 4:3 camera) -> gd-prep (--size 16x24 --fit crop) -> gd-train -> gd-export:
    the bundle carries the fit and the size, and the server takes the camera's frames."""
    from export.cli import main as gd_export
    from synth.cli import main as gd_synth
    from training.cli import main as gd_train
    from training.prep import main as gd_prep

    data, cache, bundle = tmp_path / "data" / "pku", tmp_path / "cache" / "pku", tmp_path / "b"
    # four videos: a session's three views (training subject) and one of a test subject's
    assert gd_synth(["detection", "--out", str(data), "--videos", "4", "--actions", "1", "1",
                     "--camera", "d435-vga", "--camera-scale", "0.05", "--modalities", "depth",
                     "--workers", "1"]) == 0  # fmt: skip
    assert gd_prep(["--dataset", "pku", "--root", str(data), "--out", str(cache),
                    "--modalities", "depth", "jjd", "--size", "16x24", "--fit", "crop",
                    "--workers", "1"]) == 0  # fmt: skip
    assert gd_train(["detect", "--preset", "quick", "--workdir", str(tmp_path), "transfer=false",
                     "target.modalities=[depth, jjd]", "model.width=4", "model.hidden_size=8",
                     "clip.clip_len=4", "clip.clip_step=4", "clip.window=3", "clip.window_step=2",
                     "train.progress=false", "train.threads=1", "target.epochs=1",
                     "target.uniform_epochs=0", "target.val_fraction=0",
                     "train.graphs=false"]) == 0  # fmt: skip
    checkpoint = str(tmp_path / "detect" / "depth.pt")
    assert gd_export(["onnx", "--checkpoint", checkpoint, "--out", str(bundle),
                      "--no-evaluate"]) == 0  # fmt: skip
    clip = json.loads((bundle / "model.json").read_text())["clip"]
    assert (clip["height"], clip["width"], clip["fit"]) == (16, 24, "crop")

    frames = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                       for p in sorted((data / "depth" / "0002-L").glob("*.png"))])  # fmt: skip
    assert frames.shape[1:] == (24, 32)
    server = live.LiveServer(dataclasses.replace(test_settings, model=bundle))
    try:
        response = live.upload(server.url, live.npy_bytes(frames), filename="v.npy", fps=30)
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    assert response.json()["video"]["clips"] == (len(range(0, len(frames), 3)) - 4) // 4 + 1


@pytest.mark.slow
def test_one_recording_reaches_the_encoder_identically_with_the_person_crop(
    recording, tmp_path, test_settings, monkeypatch
):
    root, db3, reference = recording
    settings = PrepSettings(dataset="pku", root=str(root), modalities=("depth",),
                            height=MODEL_SIZE[0], width=MODEL_SIZE[1], split="cross-subject",
                            person_crop=True)  # fmt: skip
    prepare(settings, tmp_path / "cache", workers=1, progress=False)
    cache = Cache(tmp_path / "cache")
    # the cache holds each clip of gd-prep's grid cropped: the model's clips must be those
    grid = settings.spec.clip_len
    spec = clip_spec(cache, **{**GEOMETRY, "clip_len": grid, "clip_step": grid})
    assert spec.person_crop
    trained = video_inputs(cache, cache.index[VIDEOS[1]], Normalizer(cache, "depth", spec), spec)
    assert len(trained) >= 7
    # the reference matters: the person's clips are cropped, not whole frames
    played = read_depth(db3)
    whole = cropped_clips(played.frames, None, spec, played.timestamps_us)
    assert whole.shape == trained.shape and not np.array_equal(trained, whole)

    bundle = make_bundle(tmp_path / "bundle", spec=spec)
    server_settings = dataclasses.replace(test_settings, model=bundle.root)
    server, recorder = recording_server(server_settings, monkeypatch)
    try:
        assert put_reference(server.url, "ward-bed", live.png(reference)).status_code == 200
        served = served_clips(server, recorder, db3, "ward-bed")
    finally:
        server.stop()

    for path, clips in served.items():  # the client's: full frames (ready.sizes has no other)
        np.testing.assert_array_equal(clips, trained, err_msg=path)
