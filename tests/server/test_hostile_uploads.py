"""Hostile uploads (issue 12): each one gets a JSON 4xx and hurts nothing else.

The byte strings here are the ones an outside tester found answering 500, accepted, costing
far more than their size, or freezing the whole server.
"""

import asyncio
import dataclasses
import json
import os
import struct
import threading
import tracemalloc
import zipfile

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

import server.uploads
from core.clip import ClipSpec, frame_timestamps_us, num_clips, resample_indices
from core.realsense import record_depth
from server.offline import TooManyClips, TooSparse, check_cost
from server.recording_worker import (
    SPOOL_PREFIX,
    RecordingDecoder,
    RecordingRejected,
    remove_stale_spool_files,
)
from server.uploads import Limits, UploadError, decode
from tests.helpers.live import (
    TOKEN,
    collect,
    frame_messages,
    hello,
    npy_bytes,
    npz_of,
    png,
    upload,
    zip_of,
)
from tests.helpers.loopback import http
from tests.helpers.tiny_bundle import TINY_SPEC, scene

AUTH = {"Authorization": f"Bearer {TOKEN}"}
FRAMES = scene(150)
# 20 byte flips (seed 7) of a 40-frame 12x16 recording that hang librealsense 2.x inside
# `load_device`, holding the interpreter lock (3 runs out of 3, on fresh recordings: what
# differs between two recordings is only their wall-clock stamps).
CORRUPT_SEED = 7


def corrupt_recording(path) -> bytes:
    frames = np.random.default_rng(0).integers(0, 5000, (40, 12, 16)).astype(np.uint16)
    record_depth(path, frames, frame_timestamps_us(40, 30), fps=30)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(CORRUPT_SEED)
    for at in rng.integers(0, len(data), 20):
        data[at] ^= int(rng.integers(1, 256))
    return bytes(data)


@pytest.fixture
def limits(tmp_path):
    decoder = RecordingDecoder(tmp_path, timeout_s=60, memory_bytes=2 << 30, max_processes=1)
    return Limits(100, 100 * 48 * 64 * 2, decoder)


def refused(data, limits, fps=30):
    with pytest.raises(UploadError) as e:
        decode(data, fps, limits)
    return e.value


def npy_with_header(header: str, data: bytes = b"", version: int = 1) -> bytes:
    text = header.encode("latin-1")
    size = struct.pack("<H" if version == 1 else "<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + size + text + data


def header(shape: str, descr: str = "<u2") -> str:
    return f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n"


# --- .npy headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, status, words",
    [
        (npy_with_header(header("(-1, 1, 1)")), 422, "negative dimension"),  # was accepted
        (npy_with_header(header("(-5, 48, 64)"), b"\0" * 100), 422, "negative dimension"),
        (npy_with_header(header("(99999999999999999999999, 1, 1)")), 413, "over any limit"),
        (npy_with_header(header(f"({10**15}, 48, 64)")), 413, "frames exceed"),
        (npy_with_header(header(f"(1, {2**40}, {2**40})")), 422, "pixels a side"),
        (npy_with_header(header("(0, 48, 64)")), 422, "T, H, W >= 1"),
        (npy_with_header(header("(2, 2, 2)")[:-4]), 422, "not a valid .npy header"),  # unclosed
        (npy_with_header(header("(" + "-" * 4000 + "1, 1, 1)")), 422, "not a valid .npy header"),
        (npy_with_header(header("(2, 2, 2)") + " " * 70_000, version=2), 422, "at most 4096"),
        (npy_with_header(header("(2, 2, 2)", descr="|O")), 422, "only plain integer or float"),
        (npy_with_header("{'descr': [('a', '<u2')], 'shape': (1,), 'x': 1}"), 422, "not a valid"),
        (b"\x93NUMPY\x09\x00\x10\x00", 422, "unsupported .npy format version 9"),
        (b"\x93NUMPY\x01\x00\xff\x00{'descr'", 422, "truncated"),
    ],
)
def test_hostile_npy_headers_are_4xx(data, status, words, limits):
    e = refused(data, limits)
    assert e.status == status and words in e.message


# --- zips -----------------------------------------------------------------------------------


def headers_of(data: bytes, name: bytes) -> tuple[int, int]:
    """Where a member's local header and its central directory entry start."""
    local = data.find(name)
    central = data.find(name, local + 1)
    assert local == 30 and data.find(name, central + 1) == -1  # the name is in both, once
    return local - 30, central - 46  # the fixed parts of the two headers


def test_npz_member_that_is_a_zip(limits):
    inner = npz_of(depth=FRAMES[:20])
    e = refused(zip_of({"depth.npy": inner}), limits)
    assert e.status == 422 and "depth.npy: not a .npy array" in e.message


def test_encrypted_zip_member_is_415(limits):
    data = bytearray(zip_of({"0.png": png(FRAMES[0])}))
    local, central = headers_of(data, b"0.png")
    data[local + 6] |= 0x1  # general purpose flags, bit 0: encrypted
    data[central + 8] |= 0x1
    e = refused(bytes(data), limits)
    assert (e.status, e.code) == (415, "unsupported_media_type") and "encrypted" in e.message


def test_a_zip_version_zipfile_does_not_know_is_415(limits):
    data = bytearray(zip_of({"0.png": png(FRAMES[0])}))
    _, central = headers_of(data, b"0.png")
    data[central + 6] = 99  # version needed to extract: 9.9 (found by mutation)
    e = refused(bytes(data), limits)
    assert e.status == 415 and "zip file version 9.9" in e.message


def test_corrupt_deflate_stream_in_a_png_member(limits):
    good = png(FRAMES[0])
    data = bytearray(zip_of({"0.png": good, "1.png": good}))
    start = 30 + len("0.png")  # the first member's data, right after its local header
    data[start : start + 20] = b"\xff" * 20
    e = refused(bytes(data), limits)
    assert e.status == 422 and "0.png: corrupt zip member" in e.message


@pytest.mark.parametrize("bad", [b"\x00", b"\x1b", b"\n"])
def test_member_names_with_control_characters(bad, limits):
    data = bytearray(zip_of({"X.png": png(FRAMES[0])}))
    local, central = headers_of(data, b"X.png")
    data[local + 30 : local + 31] = data[central + 46 : central + 47] = bad
    e = refused(bytes(data), limits)
    assert e.status == 422 and "printable" in e.message
    assert not any(c in e.message for c in "\x00\x1b\n")


def test_long_member_names_are_cut_in_messages(limits):
    e = refused(zip_of({"n" * 200 + ".txt": b"x"}), limits)
    assert e.status == 415 and "n" * 80 + "..." in e.message and "n" * 81 not in e.message


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_every_compression_method_reads_right(method, limits):
    members = {f"{i}.png": png(f) for i, f in enumerate(FRAMES[:12])}
    assert np.array_equal(decode(zip_of(members, method), 30, limits).frames, FRAMES[:12])
    npz = zip_of({"depth.npy": npy_bytes(FRAMES[:12])}, method)
    assert np.array_equal(decode(npz, 30, limits).frames, FRAMES[:12])


def lying_zip(method: int, real_size: int, declared: int) -> bytes:
    """A zip whose one member inflates to `real_size` zeros but declares `declared` bytes."""
    data = bytearray(zip_of({"0.png": b"\0" * real_size}, method))
    local, central = headers_of(data, b"0.png")
    for field in (local + 22, central + 24):  # the uncompressed size in each header
        assert data[field : field + 4] == struct.pack("<I", real_size)
        data[field : field + 4] = struct.pack("<I", declared)
    return bytes(data)


# What each member inflates to: over twice its decompressor's own state (lzma's is its 8 MiB
# dictionary, deflate's and bzip2's about 0.1 MiB or less as traced), so that inflating it whole
# shows in the peak; no larger: compressing the zeros costs up to ~30 ms of CPU a MiB.
REAL_SIZE = {zipfile.ZIP_DEFLATED: 4 << 20, zipfile.ZIP_BZIP2: 4 << 20, zipfile.ZIP_LZMA: 24 << 20}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(REAL_SIZE))
def test_a_member_that_lies_about_its_size_stops_at_the_declared_size(method, limits):
    real = REAL_SIZE[method]
    data = lying_zip(method, real, declared=100)
    tracemalloc.start()
    try:
        e = refused(data, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (e.status, e.code) == (413, "too_large") and "past its declared 100 bytes" in e.message
    # Inflating the member whole would take its `real` bytes; stopping at 101 bytes takes the
    # decompressor's own state only (REAL_SIZE).
    assert peak < real // 2


def test_a_directory_of_many_entries_is_refused_before_parsing(limits):
    entry = struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", *[0] * 11, 1, *[0] * 6) + b"a"
    directory = entry * 100_000  # 4.7 MB of one-letter entries: ~2 s of zipfile's parsing
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(directory), 0, 0)
    e = refused(b"PK\x03\x04" + directory + end, limits)
    assert e.status == 413 and "up to 100000 files; the limit is 100" in e.message


def test_timestamps_beyond_int64_are_refused(limits):
    ts = np.array([0, 2**63 + 5], np.uint64)
    e = refused(npz_of(depth=FRAMES[:2], timestamps_us=ts), limits, fps=None)
    assert e.status == 422 and "int64" in e.message


def test_fps_inside_an_npz_must_be_finite(limits):
    for fps in (np.nan, np.inf, 0.0):
        e = refused(npz_of(depth=FRAMES[:20], fps=np.array(fps)), limits, fps=None)
        assert (e.status, e.code) == (422, "invalid_fps")


def test_oversized_timing_arrays_are_refused_before_inflating(limits):
    e = refused(npz_of(depth=FRAMES[:20], timestamps_us=np.zeros(10**4, np.int64)), limits)
    assert e.status == 422 and "at most 20 numbers" in e.message


@pytest.mark.parametrize(
    "fault, status, words",
    [(IndexError("x"), 422, "cannot be decoded (IndexError)"), (MemoryError(), 413, "memory")],
)
def test_any_decoder_fault_is_a_4xx(fault, status, words, limits, monkeypatch):
    def broken(png):
        raise fault

    monkeypatch.setattr(server.uploads, "png_depth_size", broken)  # a fault no check foresaw
    e = refused(zip_of({"0.png": png(FRAMES[0])}), limits)
    assert e.status == status and words in e.message


# --- cost -----------------------------------------------------------------------------------


def test_kept_frames_are_capped_per_frame_received():
    spec = ClipSpec()  # 10 fps kept, clips of 10
    # 10 frames over 3.9 s are 40 ticks at 10 fps: 4 per frame, the cap; 4.0 s is 41
    check_cost(10, np.array([0, 3_900_000]), spec, max_clips=None, max_upsample=4)
    with pytest.raises(TooSparse, match="41 frames at the model's 10 fps"):
        check_cost(10, np.array([0, 4_000_000]), spec, max_clips=None, max_upsample=4)
    # 2 frames: the cap counts one clip's worth of frames at least (4 x 10 ticks)
    check_cost(2, np.array([0, 3_900_000]), spec, max_clips=None, max_upsample=4)
    with pytest.raises(TooSparse, match="GD_MAX_UPLOAD_UPSAMPLE"):
        check_cost(2, np.array([0, 10**11]), spec, max_clips=None, max_upsample=4)


def test_clips_are_capped():
    spec = ClipSpec()
    ts = frame_timestamps_us(300, 30)  # 100 kept frames: clips (100 - 10) // 10 + 1 = 10
    assert num_clips(len(resample_indices(ts, spec.kept_fps)), spec) == 10
    check_cost(300, ts, spec, max_clips=10, max_upsample=4)
    with pytest.raises(TooManyClips, match="10 clips .* limit of 9 .GD_MAX_UPLOAD_CLIPS"):
        check_cost(300, ts, spec, max_clips=9, max_upsample=4)


def test_extreme_timestamps_do_not_overflow():
    ts = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max])
    with pytest.raises(TooSparse):
        check_cost(2, ts, ClipSpec(), max_clips=10**9, max_upsample=4)


# --- recordings -----------------------------------------------------------------------------


def spooled(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(SPOOL_PREFIX)]


@pytest.mark.integration  # a decoder process
def test_a_decoder_over_its_memory_limit_is_refused(tmp_path):
    record_depth(tmp_path / "r.db3", FRAMES[:20], frame_timestamps_us(20, 30), fps=30)
    data = (tmp_path / "r.db3").read_bytes()
    spool = tmp_path / "spool"
    spool.mkdir()
    roomy = RecordingDecoder(spool, timeout_s=60, memory_bytes=2 << 30, max_processes=1)
    frames, _ = roomy.decode(data, "db3", 100, 1 << 30)
    assert np.array_equal(frames, FRAMES[:20])
    cramped = Limits(100, 1 << 30, RecordingDecoder(spool, 60, 64 << 20, 1))  # not even numpy
    e = refused(data, cramped, fps=None)
    assert e.status in (413, 422) and e.code in ("too_large", "invalid_recording")
    assert spooled(spool) == []


def test_decoders_past_the_limit_wait_then_get_429(tmp_path):
    decoder = RecordingDecoder(tmp_path, timeout_s=0.2, memory_bytes=2 << 30, max_processes=1)
    record_depth(tmp_path / "r.db3", FRAMES[:20], frame_timestamps_us(20, 30), fps=30)
    with decoder.slot(), pytest.raises(RecordingRejected) as e:  # the one decoder is busy
        decoder.decode((tmp_path / "r.db3").read_bytes(), "db3", 100, 1 << 30)
    assert (e.value.status, e.value.code) == (429, "decoders_busy")
    assert "GD_MAX_DECODERS" in e.value.message


def test_stale_spool_files_are_removed(tmp_path):
    dead, alive = 2**31 - 7, os.getppid()  # no pid is that large; our parent runs
    names = [
        f"{SPOOL_PREFIX}{dead}-abc.db3",
        f"{SPOOL_PREFIX}{os.getpid()}-abc.out",  # ours, at start: a restarted pid 1's leftovers
        f"{SPOOL_PREFIX}xyz.bag",  # before names carried a pid
        f"{SPOOL_PREFIX}{alive}-abc.db3",
        "other-file",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_spool_files(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:])


# --- against a live server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_server(test_settings, tmp_path_factory):
    from tests.helpers.live import LiveServer

    spool = tmp_path_factory.mktemp("hostile-spool")
    (spool / f"{SPOOL_PREFIX}{2**31 - 7}-left.db3").write_bytes(b"x")  # a killed server's
    # decode_timeout_s: how long the hanging recording's decoder runs, while the test waits
    settings = dataclasses.replace(
        test_settings, spool_dir=spool, decode_timeout_s=2.0, max_upload_clips=12
    )
    live = LiveServer(settings)
    yield live
    live.stop()


def test_stale_spool_files_are_gone_once_the_server_runs(hostile_server):
    assert spooled(hostile_server.service.settings.spool_dir) == []


def error_of(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()["error"]


def test_two_frames_claiming_a_day_are_refused_at_once(hostile_server):
    data = npy_bytes(np.zeros((2, 5, 5), np.uint16))  # 178 bytes
    error = error_of(upload(hostile_server.url, data, fps=0.00001), 422)
    assert error["code"] == "too_sparse" and "GD_MAX_UPLOAD_UPSAMPLE" in error["message"]


def test_npz_timestamps_with_a_huge_gap(hostile_server):
    ts = np.append(frame_timestamps_us(19, 30), 10**15)
    r = upload(hostile_server.url, npz_of(depth=FRAMES[:20], timestamps_us=ts), "a.npz")
    assert error_of(r, 422)["code"] == "too_sparse"


def test_clips_over_the_limit_are_413(hostile_server):
    assert upload(hostile_server.url, npy_bytes(FRAMES), fps=30).json()["video"]["clips"] == 12
    error = error_of(upload(hostile_server.url, npy_bytes(scene(162)), fps=30), 413)
    assert error["code"] == "too_many_clips" and "GD_MAX_UPLOAD_CLIPS" in error["message"]


@pytest.mark.parametrize("fps", ["nan", "inf", "-inf", "1e999"])
def test_fps_must_be_finite(hostile_server, fps):
    assert error_of(upload(hostile_server.url, npy_bytes(FRAMES), fps=fps), 400)["code"] == (
        "bad_request"
    )


def test_a_300_character_boundary(hostile_server):
    boundary = "b" * 300
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\nx\r\n--{boundary}--'
    r = http.post(
        f"{hostile_server.url}/v1/detections?fps=30",
        content=body.encode(),
        headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "1 to 70 characters" in error_of(r, 400)["message"]


@pytest.mark.parametrize(
    "data",
    [
        npy_with_header(header("(-1, 1, 1)")),
        npy_with_header(header("(" + "-" * 4000 + "1, 1, 1)")),
        zip_of({"depth.npy": npz_of(depth=FRAMES[:20])}),
    ],
)
def test_hostile_bytes_answer_json_4xx_over_http(hostile_server, data):
    assert error_of(upload(hostile_server.url, data, fps=30), 422)["code"] == "invalid_video"


def test_openapi_documents_the_429(hostile_server):
    spec = http.get(f"{hostile_server.url}/openapi.json").json()
    assert "429" in spec["paths"]["/v1/detections"]["post"]["responses"]


def test_server_faults_answer_json_500(make_server, test_settings, monkeypatch):
    live = make_server(test_settings)

    def broken() -> dict:
        raise RuntimeError("a bug")

    monkeypatch.setattr(live.service, "model_card", broken)
    error = error_of(http.get(f"{live.url}/v1/model", headers=AUTH), 500)
    assert error["code"] == "internal_error" and "a bug" not in error["message"]
    assert http.get(f"{live.url}/healthz").status_code == 200


@pytest.mark.slow
def test_a_recording_that_hangs_librealsense_harms_nothing(hostile_server, tmp_path):
    data = corrupt_recording(tmp_path / "r.db3")
    answer, polls, events, close_code, sent = asyncio.run(
        upload_while_serving(hostile_server, data)
    )
    error = error_of(answer, 422)
    assert error["code"] == "decode_timeout"  # killed after GD_DECODE_TIMEOUT_S
    assert polls and all(status == 200 for status in polls)  # each answered within 5 s
    # the stream lost nothing: a score for every clip of every frame it sent
    ts = frame_timestamps_us(sent, 30)
    clips = num_clips(len(resample_indices(ts, TINY_SPEC.kept_fps)), TINY_SPEC)
    assert [e["clip"] for e in events if e["type"] == "scores"] == list(range(clips))
    assert close_code == 1000
    assert spooled(hostile_server.service.settings.spool_dir) == []


async def upload_while_serving(live, data: bytes):
    """Upload `data` while a /healthz poller and a WebSocket stream run; both go on until the
    upload has answered, then the stream sends some more and ends."""
    frames = scene(1200)
    messages = frame_messages(frames, frame_timestamps_us(len(frames), 30) + 1_000_000)
    done = threading.Event()
    polls: list[int] = []

    async def poll() -> None:
        async with httpx.AsyncClient(base_url=live.url, timeout=5.0) as client:
            while not done.is_set():
                polls.append((await client.get("/healthz")).status_code)  # a hang raises
                await asyncio.sleep(0.05)

    def post() -> httpx.Response:
        try:
            return upload(live.url, data, "bad.db3")
        finally:
            done.set()

    async with connect(live.ws_url, additional_headers=AUTH, max_size=None) as ws:
        await ws.send(json.dumps(hello()))
        assert json.loads(await ws.recv())["type"] == "ready"
        reader = asyncio.create_task(collect(ws))
        poller = asyncio.create_task(poll())
        answer = asyncio.create_task(asyncio.to_thread(post))
        sent = 0
        while not done.is_set() and sent < len(messages) - 30:
            await ws.send(messages[sent])
            sent += 1
            await asyncio.sleep(0.02)
        for message in messages[sent : sent + 30]:  # after the upload's answer
            await ws.send(message)
        sent += 30
        await ws.send(json.dumps({"type": "end"}))
        events = await asyncio.wait_for(reader, 30)
        close_code = ws.close_code
        await poller
        return await answer, polls, events, close_code, sent
