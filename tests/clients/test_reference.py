"""Camera references from the client side: the median capture, `gd-stream reference` from a
recording made through librealsense's software device, a file and a synthetic room, and
`Client.put_reference` / `get_reference` / `delete_reference` against a real server."""

import dataclasses
import json
from fractions import Fraction
from statistics import median

import numpy as np
import pytest

from clients import stream, upload
from clients.api import Client, TooLarge, Unauthorized, encode_reference
from clients.reference import capture, median_depth
from clients.sources import SourceError
from core.clip import frame_timestamps_us, resample_indices
from core.depthfiles import decode_png_depth
from core.limits import MAX_SIDE
from core.realsense import record_depth
from synth.generate import detection_shot
from tests.helpers.live import TOKEN
from tests.helpers.tiny_bundle import TINY_SPEC, WALL_MM, make_bundle, scene


def by_hand(frames: np.ndarray) -> np.ndarray:
    """`median_depth` pixel by pixel with exact fractions: the median of the non-zero readings
    rounded half up, 0 where fewer than half of the frames read the pixel."""
    n, h, w = frames.shape
    out = np.zeros((h, w), np.uint16)
    for r in range(h):
        for c in range(w):
            readings = [Fraction(int(x)) for x in frames[:, r, c] if x]
            if 2 * len(readings) >= n:
                out[r, c] = int(median(readings) + Fraction(1, 2))  # floor(m + 1/2)
    return out


def test_median_of_the_readings_where_half_the_frames_have_one():
    pixels = [  # the four frames' readings of one pixel -> the reference
        ([100, 0, 300, 200], 200),  # three readings: their middle one
        ([0, 0, 400, 600], 500),  # two of four is half: the mean of the middle two
        ([101, 102, 0, 0], 102),  # 101.5 rounds half up
        ([0, 0, 0, 500], 0),  # one reading in four: no reading
        ([0, 0, 0, 0], 0),
        ([65535] * 4, 65535),  # no overflow in the mean
    ]
    frames = np.array([p for p, _ in pixels], np.uint16).T.reshape(4, 1, len(pixels))
    assert median_depth(frames)[0].tolist() == [m for _, m in pixels]


@pytest.mark.parametrize("n", [1, 5, 6])
def test_median_matches_the_definition_on_noisy_frames(n):
    rng = np.random.default_rng(n)
    frames = rng.integers(300, 5000, (n, 7, 9)).astype(np.uint16)
    frames[rng.random(frames.shape) < 0.4] = 0  # holes: some pixels lose their majority
    assert np.array_equal(median_depth(frames), by_hand(frames))


def frames_of(images):
    return iter([(i * 33_333, image) for i, image in enumerate(images)])


def test_capture_takes_the_first_n_frames_and_reports_progress():
    images = scene(8, seed=3)
    seen = []
    got = capture(frames_of(images), 5, seen.append)
    assert np.array_equal(got, median_depth(images[:5]))
    assert seen == [1, 2, 3, 4, 5]


def test_capture_errors():
    with pytest.raises(SourceError, match="ended after 3 frames.*--frames 3"):
        capture(frames_of(scene(3)), 5)
    with pytest.raises(SourceError, match="gave no frames"):
        capture(iter([]), 5)
    with pytest.raises(SourceError, match="frame 1 is 32x24, the first 64x48"):
        capture(frames_of([scene(1)[0], scene(1, 24, 32)[0]]), 2)
    with pytest.raises(ValueError, match="in 1..300"):
        capture(frames_of(scene(1)), 0)


@pytest.fixture(scope="module")
def empty_room(tmp_path_factory):
    """An empty room (the tiny model's noisy wall with holes) recorded as a `.db3` through the
    software device, as `rs-record` writes a camera's: (path, frames)."""
    frames = scene(12, seed=7)
    path = tmp_path_factory.mktemp("room") / "ward3-bed2.db3"
    record_depth(path, frames, frame_timestamps_us(len(frames), 30) + 1_000_000, fps=30)
    return path, frames


def run(capsys, *argv):
    code = stream.main(["reference", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_reference_of_a_recording_to_a_file(empty_room, tmp_path, capsys):
    path, frames = empty_room
    out = tmp_path / "refs" / "bed2.png"
    code, printed, _ = run(capsys, "file", str(path), "--frames", "9", "--out", str(out))
    assert code == 0
    reference = decode_png_depth(out.read_bytes())
    assert np.array_equal(reference, median_depth(frames[:9]))
    valid = np.count_nonzero(reference) / reference.size
    assert printed == (f"reference of ward3-bed2: 64x48, {valid:.0%} of pixels with a reading; "
                       f"written to {out}\n")  # fmt: skip
    assert list(out.parent.iterdir()) == [out]  # written atomically: no temporary left


def test_reference_of_a_synthetic_room(tmp_path, capsys):
    out = tmp_path / "synth.png"
    code, printed, _ = run(capsys, "synth", "--seed", "4", "--width", "64", "--height", "48",
                           "--frames", "3", "--out", str(out), "--json")  # fmt: skip
    assert code == 0
    room = detection_shot(4, subject=1, camera=2, n_actions=5, size=(48, 64)).reference()
    assert np.array_equal(decode_png_depth(out.read_bytes()), room)  # 3 frames of one room
    answer = json.loads(printed)
    assert (answer["camera_id"], answer["height"], answer["width"]) == ("synth", 48, 64)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["file", "none.db3"], "no such file"),
        (["file", "ROOM", "--frames", "13"], "ended after 12 frames"),
        (["file", "DARK", "--fps", "30", "--frames", "4"], "no pixel had a reading"),
        (["synth", "--actions", "0"], "n_actions"),
    ],
)
def test_reference_bad_input_exits_2(argv, message, empty_room, tmp_path, capsys):
    np.save(tmp_path / "dark.npy", np.zeros((4, 8, 8), np.uint16))  # a covered lens
    paths = {"ROOM": str(empty_room[0]), "DARK": str(tmp_path / "dark.npy")}
    argv = [paths.get(a, a) for a in argv]
    code, _, err = run(capsys, *argv, "--out", str(tmp_path / "x.png"))
    assert code == 2
    assert message in err
    assert not (tmp_path / "x.png").exists()


def test_reference_without_a_camera_exits_2(capsys):
    import pyrealsense2 as rs

    if len(rs.context().query_devices()):
        pytest.skip("a RealSense camera is connected to this machine")
    code, _, err = run(capsys, "realsense", "--out", "never.png")
    assert code == 2
    assert "no RealSense camera found" in err


@pytest.mark.parametrize(("frames", "message"), [("0", "--frames must be in 1..300"),
                                                 ("many", "invalid int value")])  # fmt: skip
def test_reference_bad_frames_argument(frames, message, capsys):
    with pytest.raises(SystemExit) as e:
        stream.main(["reference", "synth", "--frames", frames])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_reference_help_says_when_to_capture(capsys):
    with pytest.raises(SystemExit) as e:
        stream.main(["reference", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "nobody in view" in text and "camera fixed" in text
    for source in ("synth", "file", "realsense"):
        assert source in text


def test_reference_to_an_unreachable_server_exits_1(empty_room, capsys):
    code, _, err = run(capsys, "file", str(empty_room[0]), "--frames", "12", "--url",
                       "http://127.0.0.1:9")  # fmt: skip
    assert code == 1
    assert "did not store the reference: cannot reach http://127.0.0.1:9" in err


# --- against a real server ---------------------------------------------------------------------


def test_reference_round_trip(server):
    client = Client(server.url, TOKEN)
    depth = median_depth(scene(5, seed=2))
    camera = "ward 3/bed 2"  # spaces and a slash travel in the path
    client.delete_reference(camera)  # the module's server may hold one from another test
    assert client.get_reference(camera) is None
    answer = client.put_reference(camera, depth)
    assert (answer["camera_id"], answer["height"], answer["width"]) == (camera, 48, 64)
    assert answer["stored"] is True  # the test server runs with its event store
    got = client.get_reference(camera)
    assert got.dtype == np.uint16 and np.array_equal(got, depth)
    assert client.delete_reference(camera) is True
    assert client.get_reference(camera) is None
    assert client.delete_reference(camera) is False


def test_reference_errors_carry_the_servers_message(server):
    with pytest.raises(Unauthorized, match="HTTP 401"):
        Client(server.url, "wrong-token").put_reference("cam", np.ones((4, 4), np.uint16))
    with pytest.raises(TooLarge) as e:  # wider than any camera: the server refuses it
        Client(server.url, TOKEN).put_reference("cam", np.ones((1, MAX_SIDE + 1), np.uint16))
    assert (e.value.status, e.value.code) == (413, "too_large")
    assert f"exceeds {MAX_SIDE} pixels a side" in e.value.message
    with pytest.raises(ValueError, match="uint16"):  # refused here, before anything is sent
        encode_reference(np.ones((4, 4), np.float32))
    with pytest.raises(ValueError, match="camera id"):
        Client(server.url, TOKEN).get_reference("")


def test_reference_of_a_recording_to_the_server(empty_room, server, capsys):
    path, frames = empty_room
    code, printed, _ = run(capsys, "file", str(path), "--url", server.url, "--token", TOKEN,
                           "--camera-id", "bed-7", "--frames", "12", "--json")  # fmt: skip
    assert code == 0
    answer = json.loads(printed)
    assert answer["server"]["camera_id"] == "bed-7" and answer["server"]["stored"] is True
    stored = Client(server.url, TOKEN).get_reference("bed-7")
    assert np.array_equal(stored, median_depth(frames))
    code, _, err = run(capsys, "file", str(path), "--frames", "12", "--url", server.url,
                       "--token", "wrong")  # fmt: skip
    assert code == 3
    assert "unauthorized" in err


# --- a person-crop model: the reference makes the crop --------------------------------------
# The tiny model labels a clip by its near fraction n: "small" near 0.15, "large" near 0.5
# (tests/helpers/tiny_bundle.py). By hand: the 19x25 near square (area 0.15 of the 48x64 wall)
# in frames 24..71 is foreground against the wall's reference; its box, padded by 10% and grown
# to the model's square, is 30x30 at the corner, where the square covers 475 / 900 = 0.53:
# "large". Without the camera's reference a clip is the whole frame: n = 0.15, "small". Clips
# of 12 source frames put the action in clips 2..5, frames 24..71, both ways.
ACTION = scene(120, actions=((24, 72, 0.15),), seed=5)


@pytest.fixture(scope="module")
def crop_server(tmp_path_factory, test_settings):
    from tests.helpers.live import LiveServer

    root = tmp_path_factory.mktemp("crop") / "tiny-crop"
    bundle = make_bundle(root, dataclasses.replace(TINY_SPEC, person_crop=True))
    live = LiveServer(dataclasses.replace(test_settings, model=bundle.root))
    Client(live.url, TOKEN).put_reference("bed-1", np.full((48, 64), WALL_MM, np.uint16))
    yield live
    live.stop()


@pytest.mark.parametrize(("camera", "label"), [("bed-1", "large"), (None, "small")])
def test_upload_camera_id_selects_the_cameras_reference(crop_server, tmp_path, capsys, camera,
                                                        label):  # fmt: skip
    np.save(tmp_path / "v.npy", ACTION)
    argv = [str(tmp_path / "v.npy"), "--fps", "30", "--url", crop_server.url, "--token", TOKEN,
            "--json", *(["--camera-id", camera] if camera else [])]  # fmt: skip
    assert upload.main(argv) == 0
    found = json.loads(capsys.readouterr().out)["detections"]
    assert [(d["label"], d["start_frame"], d["end_frame"]) for d in found] == [(label, 24, 71)]


@pytest.mark.parametrize(("camera", "label"), [("bed-1", "large"), ("bed-9", "small")])
def test_stream_sends_whole_frames_for_the_crop(crop_server, tmp_path, capsys, camera, label):
    np.save(tmp_path / "v.npy", ACTION)
    argv = ["file", str(tmp_path / "v.npy"), "--fps", "30", "--fast", "--url", crop_server.url,
            "--token", TOKEN, "--camera-id", camera, "--json"]  # fmt: skip
    assert stream.main(argv) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ready = events[0]
    assert ready["type"] == "ready" and ready["sizes"] == [{"height": 48, "width": 64}]
    ends = [e for e in events if e["type"] == "action" and e["state"] == "end"]
    assert [(e["label"], e["start_frame"], e["end_frame"]) for e in ends] == [(label, 24, 71)]
    kept = resample_indices(frame_timestamps_us(len(ACTION), 30), TINY_SPEC.kept_fps)
    assert events[-1]["type"] == "end" and events[-1]["frames_received"] == len(kept)


def test_upload_stores_the_reference_it_is_given_first(crop_server, tmp_path, capsys):
    np.save(tmp_path / "v.npy", ACTION)
    png = tmp_path / "room.png"
    png.write_bytes(encode_reference(np.full((48, 64), WALL_MM, np.uint16)))
    argv = [str(tmp_path / "v.npy"), "--fps", "30", "--url", crop_server.url, "--token", TOKEN,
            "--json", "--camera-id", "bed-3", "--reference", str(png)]  # fmt: skip
    assert upload.main(argv) == 0
    found = json.loads(capsys.readouterr().out)["detections"]
    assert [d["label"] for d in found] == ["large"]  # cropped with bed-3's new reference
    stored = Client(crop_server.url, TOKEN).get_reference("bed-3")
    np.testing.assert_array_equal(stored, np.full((48, 64), WALL_MM, np.uint16))


def test_upload_reference_errors_exit_2(crop_server, tmp_path, capsys):
    np.save(tmp_path / "v.npy", ACTION)
    base = [str(tmp_path / "v.npy"), "--fps", "30", "--url", crop_server.url, "--token", TOKEN]
    with pytest.raises(SystemExit) as e:  # a reference without its camera
        upload.main([*base, "--reference", str(tmp_path / "v.npy")])
    assert e.value.code == 2 and "--reference needs --camera-id" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert (
        upload.main([*base, "--camera-id", "bed-4", "--reference", str(tmp_path / "bad.png")]) == 2
    )
    assert "bad.png" in capsys.readouterr().err
    assert (
        upload.main([*base, "--camera-id", "bed-4", "--reference", str(tmp_path / "no.png")]) == 2
    )
    assert "no.png" in capsys.readouterr().err


@pytest.mark.slow  # renders every scene of a synthetic source: 1.5 CPU s
def test_a_synthetic_source_hands_each_scenes_empty_room_before_its_frames():
    from clients.sources import synth as synth_source

    source = synth_source(seed=3, actions=1, size=(24, 32), loop=True)
    seen = []
    source.on_room.append(lambda room: seen.append((len(frames), room)))
    frames = []
    for frame in source.frames:
        frames.append(frame)
        if len(seen) == 2:
            break
    first, second = (detection_shot(s, subject=1, camera=2, n_actions=1, size=(24, 32))
                     for s in (3, 4))  # fmt: skip
    assert seen[0][0] == 0  # before the first scene's first frame
    np.testing.assert_array_equal(seen[0][1], first.reference())
    assert seen[1][0] == len(first.film().depth)  # before the second scene's first frame
    np.testing.assert_array_equal(seen[1][1], second.reference())


def test_gd_stream_synth_stores_its_rooms_as_the_cameras_reference(crop_server, capsys):
    argv = ["synth", "--actions", "1", "--width", "64", "--height", "48", "--fast", "--url",
            crop_server.url, "--token", TOKEN, "--camera-id", "synth-9", "--json"]  # fmt: skip
    assert stream.main(argv) == 0
    room = detection_shot(0, subject=1, camera=2, n_actions=1, size=(48, 64)).reference()
    stored = Client(crop_server.url, TOKEN).get_reference("synth-9")
    np.testing.assert_array_equal(stored, room)
    ready = json.loads(capsys.readouterr().out.splitlines()[0])
    assert ready["type"] == "ready" and ready["reference"] is True
