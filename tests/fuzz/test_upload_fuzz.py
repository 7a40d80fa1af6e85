"""Property-based fuzzing of `POST /v1/detections`: every upload format, mutated at the level
its parser works at (npy header text, zip records, PNG chunks, multipart framing, recording
bytes), against a real `gd-serve`. Oracles: tests/fuzz/harness.py."""

import zipfile

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz import corpus, harness
from tests.fuzz.corpus import Chunk
from tests.fuzz.harness import AUTH, fuzz_settings, upload

pytestmark = pytest.mark.slow  # every test talks to the run's gd-serve subprocess

FRAMES = corpus.seed_frames()
PAYLOAD = FRAMES.tobytes()
NPY = corpus.npy(FRAMES)
FPS = st.one_of(
    st.none(),
    st.sampled_from([30, 1, 0.5, 1000, 0.001]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
# Integers where parsers and size arithmetic break: signs, zero, word edges, beyond 64 bits.
EDGE_INTS = st.one_of(
    st.integers(-3, 64),
    st.sampled_from([2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, 10**30]),
    st.integers(-(2**70), 2**70),
)


def params(fps):
    return None if fps is None else {"fps": fps}


# --- .npy ----------------------------------------------------------------------------------

SHAPE = st.one_of(
    st.lists(st.one_of(EDGE_INTS, st.integers(1, 40)), max_size=5).map(
        lambda dims: "(" + "".join(f"{d}, " for d in dims) + ")"
    ),
    st.text(alphabet="()[]{}-+,.0123456789eEjL x'\"", max_size=300),
    st.integers(1, 3000).map(lambda n: "(" + "-" * n + "1, 1, 1)"),
)
DESCR = st.one_of(
    st.sampled_from(["'<u2'", "'>u2'", "'|u2'", "'<i2'", "'<u1'", "'<f8'", "'O'", "'V2'", "'<U2'"]),
    st.sampled_from(["[('a', '<u2')]", "('<u2', (2,))", "'<u2' * 9", "None", "{}"]),
    st.text(max_size=30).map(repr),
)
FORTRAN = st.sampled_from(["False", "True", "0", "1", "None", "'False'", "[]"])


@st.composite
def npy_headers(draw):
    fields = {"descr": draw(DESCR), "fortran_order": draw(FORTRAN), "shape": draw(SHAPE)}
    for key in draw(st.lists(st.sampled_from(sorted(fields)), max_size=1)):
        del fields[key]
    if draw(st.booleans()):
        fields["extra"] = "1"
    text = "{" + "".join(f"'{k}': {v}, " for k, v in fields.items()) + "}"
    cut = draw(st.one_of(st.none(), st.integers(0, len(text))))  # unclosed dicts
    return text[:cut].encode("utf-8", "surrogatepass")


@fuzz_settings()
@given(
    header=npy_headers(),
    version=st.sampled_from([(1, 0), (2, 0), (3, 0), (0, 0), (1, 9), (255, 255)]),
    payload_len=st.integers(0, len(PAYLOAD) + 64),
    fps=FPS,
)
@example(
    header=b"{'descr': '<u2', 'fortran_order': False, 'shape': (16, 24, 32), }",
    version=(1, 0),
    payload_len=len(PAYLOAD),
    fps=30,
)
def test_npy_headers(fuzz_server, header, version, payload_len, fps):
    data = corpus.npy_with_header(header, (PAYLOAD * 2)[:payload_len], version)
    upload(fuzz_server, "npy-header", data, "clip.npy", params(fps))


@fuzz_settings()
@given(
    edits=st.lists(st.tuples(st.integers(0, 127), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, len(NPY))),
    fps=FPS,
)
def test_npy_bytes(fuzz_server, edits, cut, fps):
    """Byte flips in the magic, version, header length and header text of a valid file."""
    data = corpus.flip(NPY, edits)[:cut]
    upload(fuzz_server, "npy-bytes", data, "clip.npy", params(fps))


@fuzz_settings()
@given(
    shape=st.lists(st.integers(0, 3000), min_size=3, max_size=3),
    payload_len=st.integers(0, 4096),
)
def test_npy_non_positive_dims_are_refused(fuzz_server, shape, payload_len):
    """A header whose shape has a dimension < 1 (negated here) is refused, never read."""
    shape[0] = -shape[0]
    header = f"{{'descr': '<u2', 'fortran_order': False, 'shape': {tuple(shape)}, }}"
    data = corpus.npy_with_header(header.encode(), PAYLOAD[:payload_len])
    upload(fuzz_server, "npy-negative", data, "clip.npy", {"fps": 30}, refuse=True)


# --- .npz ----------------------------------------------------------------------------------

ARRAYS = st.sampled_from(["<u2", ">u2", "<i4", "<f4", "|u1", "<u8", "<i8"]).flatmap(
    lambda dtype: st.tuples(
        st.just(dtype), st.lists(st.integers(0, 20), min_size=0, max_size=4).map(tuple)
    )
)


@st.composite
def npz_files(draw):
    arrays = {}
    if draw(st.booleans()):
        depth = FRAMES if draw(st.booleans()) else None
        if depth is None:
            dtype, shape = draw(ARRAYS)
            depth = np.zeros(shape, dtype)
        arrays[draw(st.sampled_from(["depth", "frames", "x"]))] = depth
    if draw(st.booleans()):
        n = draw(st.integers(0, len(FRAMES) + 2))
        values = draw(
            st.lists(EDGE_INTS.filter(lambda v: -(2**63) <= v < 2**63), min_size=n, max_size=n)
        )
        dtype = draw(st.sampled_from(["<i8", "<u4", "<f8"]))
        arrays["timestamps_us"] = np.array(values, np.int64).astype(dtype)
    if draw(st.booleans()):
        fps = draw(st.one_of(st.floats(), st.lists(st.floats(), max_size=3)))
        arrays["fps"] = np.array(fps)
    return corpus.npz(draw(st.booleans()), **arrays)


@fuzz_settings()
@given(data=npz_files(), fps=FPS)
def test_npz(fuzz_server, data, fps):
    upload(fuzz_server, "npz", data, "clip.npz", params(fps))


# --- zip records ---------------------------------------------------------------------------

ZIPS = {
    "stored-png": corpus.png_zip(FRAMES, zipfile.ZIP_STORED),
    "deflated-png": corpus.png_zip(FRAMES),
    "bzip2-png": corpus.png_zip(FRAMES[:4], zipfile.ZIP_BZIP2),
    "lzma-png": corpus.png_zip(FRAMES[:4], zipfile.ZIP_LZMA),
    "npz": corpus.npz(True, depth=FRAMES),
}
FIELD_VALUES = st.one_of(
    EDGE_INTS, st.sampled_from([0, 1, 8, 9, 12, 14, 93, 95, 98, 99, 0x41, 0x800, 0xFFFF])
)


@st.composite
def zip_mutations(draw):
    kind = draw(st.sampled_from(sorted(ZIPS)))
    data = ZIPS[kind]
    if draw(st.booleans()):  # member names: same length, any bytes (NUL, '/', '..', non-UTF-8)
        offset, length = draw(st.sampled_from(corpus.zip_names(data)))
        name = draw(st.binary(min_size=length, max_size=length))
        data = data[:offset] + name + data[offset + length :]
    fields = corpus.zip_fields(data)
    for _ in range(draw(st.integers(0, 3))):
        data = corpus.set_field(data, draw(st.sampled_from(fields)), draw(FIELD_VALUES))
    return kind, data


@fuzz_settings()
@given(case=zip_mutations(), fps=FPS)
def test_zip_records(fuzz_server, case, fps):
    """Zip directory fields (flags incl. encryption, methods, sizes, CRCs, offsets, counts) and
    member names of valid PNG zips and .npz files."""
    kind, data = case
    name = "clip.npz" if kind == "npz" else "frames.zip"
    upload(fuzz_server, f"zip-{kind}", data, name, params(fps))


# --- PNG chunks ----------------------------------------------------------------------------

SEED_PNG = corpus.png(FRAMES[0])


@st.composite
def png_mutations(draw):
    chunks = corpus.png_chunks(SEED_PNG)
    ihdr = bytearray(chunks[0].data)
    for _ in range(draw(st.integers(0, 3))):  # width, height, bit depth, color, methods
        offset, fmt = draw(
            st.sampled_from(
                [(0, ">I"), (4, ">I"), (8, "B"), (9, "B"), (10, "B"), (11, "B"), (12, "B")]
            )
        )
        size = 4 if fmt == ">I" else 1
        value = draw(EDGE_INTS) % (1 << (8 * size))
        ihdr[offset : offset + size] = value.to_bytes(size, "big")
    chunks[0] = Chunk(b"IHDR", bytes(ihdr))
    idat = chunks[1].data
    edits = draw(
        st.lists(st.tuples(st.integers(0, len(idat) - 1), st.integers(0, 255)), max_size=6)
    )
    chunks[1] = Chunk(b"IDAT", corpus.flip(idat, edits) if edits else idat)
    if draw(st.booleans()):
        chunk_type = draw(st.sampled_from([b"IDAT", b"IEND", b"PLTE", b"tEXt", b"zzzz"]))
        chunks.insert(draw(st.integers(0, len(chunks))), Chunk(chunk_type, draw(st.binary())))
    data = corpus.png_from_chunks(chunks, fix_crc=draw(st.booleans()))
    return data[: draw(st.one_of(st.none(), st.integers(0, len(data))))]


@fuzz_settings()
@given(
    bad=png_mutations(),
    where=st.sampled_from(["first", "last", "all"]),
    method=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
)
def test_png_chunks(fuzz_server, bad, where, method):
    """PNG headers (size, depth, color type), deflate streams behind right CRCs, extra and
    truncated chunks, in a zip of otherwise good frames."""
    good = [corpus.png(f) for f in FRAMES]
    pngs = {"first": [bad, *good[1:]], "last": [*good[:-1], bad], "all": [bad] * len(good)}
    members = {f"{i:04d}.png": p for i, p in enumerate(pngs[where])}
    data = corpus.zip_of(members, method)
    upload(fuzz_server, "png-chunks", data, "frames.zip", {"fps": 30})


# --- multipart framing ---------------------------------------------------------------------

# Header values stay printable: uvicorn itself refuses control characters in a header with a
# plain-text 400 before the app sees the request (HTTP framing, not the app's input).
HEADER_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
BOUNDARY = st.one_of(
    st.text(alphabet="abcXYZ0123456789'()+_,-./:=? ", min_size=1, max_size=80),
    st.integers(1, 2000).map(lambda n: "b" * n),
    st.text(alphabet=HEADER_CHARS, max_size=40),
)
DISPOSITION = st.sampled_from(
    [
        'form-data; name="file"; filename="clip.npy"',
        "form-data; name=file",
        'form-data; name="x"',
        "form-data",
        "form-data; name=\"file\"; filename*=UTF-8''c%00.npy",
        "attachment",
        "",
        'form-data; name="file"; name="file"',
    ]
)


@st.composite
def multipart_bodies(draw):
    boundary = draw(BOUNDARY)
    b = boundary.encode("latin-1")
    newline = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        disposition = draw(DISPOSITION).encode()
        content = draw(st.sampled_from([NPY, b"", NPY[:100]]))
        headers = b"Content-Disposition: " + disposition + newline
        if draw(st.booleans()):
            headers += b"Content-Type: " + draw(st.binary(max_size=40)) + newline
        parts.append(b"--" + b + newline + headers + newline + content + newline)
    body = draw(st.binary(max_size=20)) + b"".join(parts)
    body += draw(st.sampled_from([b"--" + b + b"--" + newline, b"--" + b, b"", b"--" + b + b"-"]))
    cut = draw(st.one_of(st.none(), st.integers(0, len(body))))
    quoted = draw(st.booleans())
    content_type = draw(
        st.one_of(
            st.just("multipart/form-data; boundary=" + (f'"{boundary}"' if quoted else boundary)),
            st.sampled_from(
                [
                    "multipart/form-data",
                    "application/octet-stream",
                    "",
                    "multipart/form-data; boundary=",
                    "multipart/mixed; boundary=x",
                ]
            ),
            st.text(alphabet=HEADER_CHARS, max_size=60),
        )
    )
    return content_type, body[:cut]


@fuzz_settings()
@given(case=multipart_bodies(), fps=st.sampled_from([None, 30]))
def test_multipart_framing(fuzz_server, case, fps):
    content_type, body = case
    # h11 (httpx) refuses to send a header value with whitespace at either end
    headers = {**AUTH, "Content-Type": content_type.strip(" \t").encode("latin-1")}

    def send(client):
        return client.post("/v1/detections", params=params(fps), content=body, headers=headers)

    saved = b"Content-Type: " + headers["Content-Type"] + b"\r\n\r\n" + body  # as it went out
    harness.check_http(fuzz_server, "multipart", send, saved)


# --- recordings and magic numbers ----------------------------------------------------------

MAGICS = [b"\x93NUMPY", b"\x93NUMPY\x01\x00", b"PK\x03\x04", b"PK\x05\x06"]
RECORDING_MAGICS = [b"SQLite format 3\x00", b"#ROSBAG V2.0", b"#ROSBAG V2.0\n"]


@fuzz_settings()
@given(magic=st.sampled_from(MAGICS), tail=st.binary(max_size=600))
def test_magic_then_garbage(fuzz_server, magic, tail):
    """Every format's magic bytes followed by anything: the sniffed decoder must fail closed."""
    upload(fuzz_server, "magic", magic + tail, "clip.bin", {"fps": 30})


@fuzz_settings(max_examples=harness.RECORDING_EXAMPLES, phases=harness.NO_SHRINK)
@given(magic=st.sampled_from(RECORDING_MAGICS), tail=st.binary(max_size=600))
def test_recording_magic_then_garbage(fuzz_server, magic, tail):
    upload(fuzz_server, "recording-magic", magic + tail, "clip.bin")


@fuzz_settings(max_examples=harness.RECORDING_EXAMPLES, phases=harness.NO_SHRINK)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=40
    ),
    cut=st.one_of(st.none(), st.integers(0, 1 << 20)),
)
def test_db3_bytes(fuzz_server, db3_seed, edits, cut):
    """Byte flips in a valid 40-frame `.db3` recorded by librealsense (issue 12's freeze came
    from 20 such flips). Not shrunk: a failing recording may hang the decoder each time."""
    data = corpus.flip(db3_seed, edits)[:cut]
    upload(fuzz_server, "db3-bytes", data, "clip.db3")
