"""Hypothesis fuzzes the input readers with random bytes and with valid files mutated by byte
flips, truncations and insertions: whatever the bytes, the only exception that may escape is
aeflow's own ``AeflowError`` (anything else is a bug in the reader)."""

from __future__ import annotations

import gzip
import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from aeflow.errors import AeflowError  # noqa: E402
from aeflow.runtime import pngfiles  # noqa: E402
from aeflow.runtime.inputs import open_source, read_idx_header, to_float32  # noqa: E402
from conftest import write_idx  # noqa: E402
from pngdata import SIGNATURE, encode_png  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IMAGES = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)


def npy_bytes() -> bytes:
    f = io.BytesIO()
    np.save(f, IMAGES)
    return f.getvalue()


def npz_bytes(compressed: bool) -> bytes:
    f = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(f, images=IMAGES, is_anomaly=np.arange(6) % 2 == 0)
    return f.getvalue()


def idx_bytes(gz: bool) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x"
        write_idx(p, IMAGES, compress=gz)
        return p.read_bytes()


VALID = {
    ".npy": npy_bytes(),
    ".npz": npz_bytes(False),
    "-compressed.npz": npz_bytes(True),
    "-idx3-ubyte": idx_bytes(False),
    "-idx3-ubyte.gz": idx_bytes(True),
    ".png": encode_png(IMAGES[0], ["none", "sub", "up", "average", "paeth"]),
}


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with a few random byte flips, a truncation and/or an insertion."""
    b = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        b[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del b[draw(st.integers(0, len(b))):]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(b)))
        b[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(b)


def consume(path: Path, image_shape=(28, 28)) -> int:
    """Open ``path`` as scorer input and read (and convert) every batch; returns the image count.
    ``image_shape=None``: the size taken from the file, as ``read_images`` does for training."""
    total = 0
    with open_source(path, image_shape=image_shape) as src:
        for batch in src.batches(4):
            to_float32(batch, src.name, total, image_shape=src.image_shape)
            total += len(batch)
    return total


def only_aeflow_errors(fn, *args) -> None:
    try:
        fn(*args)
    except AeflowError as e:
        assert e.message and "\n" not in e.message
    # anything else propagates and fails the test


def fuzz_file(suffix: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"x{suffix}"
        p.write_bytes(data)
        only_aeflow_errors(consume, p)
        only_aeflow_errors(consume, p, None)
        if "idx" in suffix:
            only_aeflow_errors(read_idx_header, p)


def test_valid_files_read_back():
    for suffix, data in VALID.items():
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / f"x{suffix}"
            p.write_bytes(data)
            assert consume(p) == (1 if suffix == ".png" else len(IMAGES)), suffix


@pytest.mark.parametrize("suffix", sorted(VALID))
@FUZZ
@given(data=st.data())
def test_mutated_files(suffix, data):
    fuzz_file(suffix, data.draw(mutated(VALID[suffix])))


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".png", "-idx3-ubyte", ".bin"])
@FUZZ
@given(raw=st.binary(max_size=2048))
def test_random_bytes(suffix, raw):
    fuzz_file(suffix, raw)


@FUZZ
@given(prefix=st.sampled_from([b"\x93NUMPY", b"PK\x03\x04", b"\x1f\x8b", b"\x00\x00\x08\x03", SIGNATURE]),
       rest=st.binary(max_size=512))
def test_random_bytes_after_a_format_magic(prefix, rest):
    fuzz_file(".bin", prefix + rest)


@FUZZ
@given(data=st.data())
def test_decode_png(data):
    blob = data.draw(st.one_of(st.binary(max_size=512), mutated(VALID[".png"])))
    only_aeflow_errors(pngfiles.decode_many, [blob], ["fuzz.png"])
    only_aeflow_errors(pngfiles.decode_png, blob, "fuzz.png")


@FUZZ
@given(data=st.data())
def test_gzip_members_of_npz(data):
    """A zip archive whose member is a mutated (compressed) .npy."""
    member = data.draw(mutated(VALID[".npy"]))
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("images.npy", member)
    fuzz_file(".npz", f.getvalue())


def test_gzip_of_garbage():
    fuzz_file("-idx3-ubyte.gz", gzip.compress(b"\x00\x00\x08\x03" + bytes(12)))


@FUZZ
@given(dims=st.lists(st.integers(0, 2**32 - 1) | st.sampled_from([0, 1, 28, 784]), min_size=1, max_size=4),
       gz=st.booleans(), payload=st.integers(0, 3000))
def test_idx_headers_with_any_dimensions(dims, gz, payload):
    """Crafted IDX headers (sizes that overflow int64, zeros, labels) over a short payload."""
    import struct

    raw = struct.pack(f">HBB{len(dims)}I", 0, 8, len(dims), *dims) + bytes(payload)
    fuzz_file("-idx3-ubyte" + (".gz" if gz else ""), gzip.compress(raw) if gz else raw)


@FUZZ
@given(shape=st.lists(st.integers(0, 2**70) | st.sampled_from([0, 1, 28, 784]), max_size=4),
       descr=st.sampled_from(["|u1", "<f4", ">f8", "<i8", "|b1", "<c8", "|O", "<U3", "|V7", "<f2", ">u2"]),
       fortran=st.booleans(), payload=st.integers(0, 5000), ext=st.sampled_from([".npy", ".npz"]))
def test_npy_headers_with_any_shape_and_dtype(shape, descr, fortran, payload, ext):
    """Crafted .npy headers (any shape, huge sizes, any dtype, either order) over a short payload,
    alone or as the member of a stored .npz."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)})
    npy = f.getvalue() + bytes(payload)
    if ext == ".npz":
        z = io.BytesIO()
        with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("images.npy", npy)
        npy = z.getvalue()
    fuzz_file(ext, npy)


@FUZZ
@given(width=st.integers(0, 2**32 - 1) | st.just(28), height=st.integers(0, 2**32 - 1) | st.just(28),
       depth=st.sampled_from([1, 8, 16]), colour=st.sampled_from([0, 2, 3, 4, 6, 5]), interlace=st.integers(0, 2),
       body=st.binary(max_size=256) | st.just(bytes(29 * 28)))
def test_png_headers_with_any_size_and_mode(width, height, depth, colour, interlace, body):
    """CRC-valid PNGs whose header claims any size or mode over a short image stream."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    blob = (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace))
            + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b""))
    only_aeflow_errors(pngfiles.decode_many, [blob], ["fuzz.png"])
    fuzz_file(".png", blob)
