"""Image inputs: PNGs through Pillow, the readers (npy, npz, IDX raw/gz, PNG folders) and every input error."""

from __future__ import annotations

import gzip
import subprocess
import sys
import io
import struct
import zlib

import numpy as np
import pytest

from aeflow.errors import InputError
from aeflow.runtime import pngfiles
from aeflow.runtime.inputs import ArraySource, check_layout, open_source, read_images, to_float32
from conftest import write_idx
from pngdata import chunk, encode_adam7, encode_png, write_png


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def read_all(source, size: int = 7) -> np.ndarray:
    with source:
        batches = list(source.batches(size))
    assert all(len(b) <= size for b in batches)
    return np.concatenate(batches)


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


def png_with_header(width=28, height=28, depth=8, colour=0, interlace=0) -> bytes:
    """A PNG whose IHDR says what we like (the pixel data is a valid 28x28 greyscale stream)."""
    data = bytearray(encode_png(images(1)[0]))
    body = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    data[16:29] = body
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + body))
    return bytes(data)


def decode(data: bytes, name: str = "x.png") -> np.ndarray:
    return pngfiles.decode_many([data], [name])[0]


def pillow_png(image, **save) -> bytes:
    from PIL import Image

    f = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(f, "PNG", **save)
    return f.getvalue()


# ---------------------------------------------------------------- PNG through Pillow

@pytest.mark.parametrize("filters", ["none", "sub", "up", "average", "paeth", ["none", "sub", "up", "average", "paeth"]])
def test_png_every_filter(filters):
    img = images(1, seed=3)[0]
    img[:, :5] = 255  # runs of equal pixels and wrap-arounds for the predictors
    assert np.array_equal(decode(encode_png(img, filters)), img)


def test_batch_road_equals_pillow_open_on_mixed_files():
    """The batch decoder (8-bit greyscale) and Image.open (everything else) agree pixel for pixel,
    in any mix, whatever each file's filters and IDAT split."""
    from PIL import Image

    x = images(40, seed=5)
    kinds = ["none", "sub", "up", "average", "paeth"]
    blobs = [encode_png(im, kinds[i % 5:] + kinds[:i % 5], split_idat=[0, 7, 100][i % 3]) for i, im in enumerate(x)]
    blobs[3] = pillow_png(x[3], optimize=True)
    blobs[5] = encode_adam7(x[5])
    got = pngfiles.decode_many(blobs, [f"{i}.png" for i in range(40)])
    assert np.array_equal(got, x)
    for i in (0, 4, 12):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(blobs[i]))), x[i])


@pytest.mark.parametrize("shape", [(28, 28), (5, 97), (64, 3)])
def test_few_images_without_pillow_equal_the_pillow_batch(shape):
    """A few files are unfiltered without Pillow, a large batch in one Pillow call: the same pixels,
    for every filter in every row (random rows, wrap-arounds, flat runs), and the same refusal."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, size=(200, *shape), dtype=np.uint8)
    x[::3, :, : shape[1] // 2] = 255
    kinds = ["none", "sub", "up", "average", "paeth"]
    blobs = [encode_png(im, list(rng.choice(kinds, size=shape[0]))) for im in x]
    assert len(blobs) * x[0].size > pngfiles._PURE_PIXELS >= 2 * x[0].size
    assert np.array_equal(pngfiles.decode_many(blobs, ["x.png"] * 200, shape), x)
    one_by_one = [pngfiles.decode_many(blobs[i:i + 2], ["x.png"] * 2, shape) for i in range(0, 200, 2)]
    assert np.array_equal(np.concatenate(one_by_one), x)
    raw = bytearray(zlib.decompress(blobs[0][41:-16]))
    raw[(shape[0] - 1) * (shape[1] + 1)] = 5  # filter type 5 in the last row
    bad = blobs[0][:33] + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")
    for n in (1, 199):
        with pytest.raises(InputError, match="bad.png: PNG scanlines cannot be decoded"):
            pngfiles.decode_many(blobs[:n] + [bad], ["x.png"] * n + ["bad.png"], shape)


def test_one_png_scored_without_importing_pillow(tmp_path):
    """Cold start: one 8-bit PNG is read without importing Pillow (a tenth of the command's time)."""
    (tmp_path / "one.png").write_bytes(encode_png(images(1, seed=2)[0], "paeth"))
    code = ("import sys; from aeflow.runtime.inputs import open_source; "
            f"x = open_source({str(tmp_path / 'one.png')!r}); "
            "print(next(x.batches(8)).sum(), 'PIL' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(images(1, seed=2)[0].sum(dtype=np.uint64)), "False"]


@pytest.mark.parametrize("bits, scale", [(1, 255), (2, 85), (4, 17)])
def test_low_bit_depths_scale_exactly(bits, scale):
    levels = (np.arange(784).reshape(28, 28) % (2 ** bits)).astype(np.uint8)
    assert np.array_equal(decode(pillow_png(levels, bits=bits)), levels * scale)


def test_16_bit_refused():
    with pytest.raises(InputError, match="16-bit greyscale PNG; aeflow reads 1, 2, 4 and 8-bit greyscale"):
        decode(pillow_png(images(1)[0].astype(np.uint16) * 257))


def test_palette_refused_even_of_greys():
    from PIL import Image

    with pytest.raises(InputError, match="8-bit palette PNG; aeflow reads greyscale images"):
        decode(pillow_png(Image.fromarray(images(1)[0]).convert("P")))


def test_transparency_chunk_ignored_grey_values_read(tmp_path):
    """A tRNS chunk marks a grey level transparent; the grey values stand."""
    x = images(1, seed=3)[0]
    grey = pillow_png(x, transparency=int(x[0, 0]))
    assert b"tRNS" in grey
    assert np.array_equal(decode(grey), x)
    assert np.array_equal(pngfiles.decode_png(grey, "x.png"), x)  # Pillow's road gives the same
    (tmp_path / "t.png").write_bytes(grey)
    assert np.array_equal(read_all(open_source(tmp_path / "t.png")), x[None])


@pytest.mark.parametrize("header, found", [
    (dict(colour=2), "8-bit RGB"),
    (dict(colour=6), "8-bit RGBA"),
    (dict(colour=4), "greyscale+alpha"),
    (dict(width=32, height=32), "32x32"),
])
def test_png_other_modes_refused(header, found):
    with pytest.raises(InputError) as e:
        decode(png_with_header(**header))
    msg = one_line_error(e)
    assert found in msg and ("greyscale" in msg or "28x28" in msg)


def test_interlaced_png_read():
    x = images(1, seed=9)[0]
    assert np.array_equal(decode(encode_adam7(x)), x)
    with pytest.raises(InputError):  # the interlace flag over a stream that is not interlaced
        decode(png_with_header(interlace=1))


@pytest.mark.parametrize("damage", ["truncate", "crc", "zlib", "signature", "short", "filter", "no-iend"])
def test_png_corruption_refused(damage):
    img = images(1)[0]
    data = bytearray(encode_png(img, "paeth"))
    if damage == "truncate":
        data = data[:60]
    elif damage == "crc":
        data[40] ^= 0xFF
    elif damage == "zlib":
        # rewrite the IDAT with garbage but a valid CRC, so only zlib can notice
        start = 33
        length = struct.unpack(">I", data[start:start + 4])[0]
        garbage = bytes(range(length % 256)) * (length // 256 + 1)
        body = garbage[:length]
        data[start + 8:start + 8 + length] = body
        data[start + 8 + length:start + 12 + length] = struct.pack(">I", zlib.crc32(b"IDAT" + body))
    elif damage == "short":  # one row missing
        raw = zlib.decompress(bytes(data[41:-16]))
        data = bytearray(bytes(data[:33]) + chunk(b"IDAT", zlib.compress(raw[:-29])) + chunk(b"IEND", b""))
    elif damage == "filter":  # filter type 7 in row 5
        raw = bytearray(zlib.decompress(bytes(data[41:-16])))
        raw[5 * 29] = 7
        data = bytearray(bytes(data[:33]) + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b""))
    elif damage == "no-iend":
        data = data[:-12]
    else:
        data[1:4] = b"GIF"
    good = encode_png(img)
    with pytest.raises(InputError) as e:
        pngfiles.decode_many([good, bytes(data), good], ["good.png", "bad.png", "good2.png"])
    assert "bad.png" in one_line_error(e)


# ---------------------------------------------------------------- readers

def test_raw_and_gzip_idx_stream_the_same_images(tmp_path):
    x = images(50)
    write_idx(tmp_path / "a-idx3-ubyte", x)
    write_idx(tmp_path / "a-idx3-ubyte.gz", x)
    raw, gz = open_source(tmp_path / "a-idx3-ubyte"), open_source(tmp_path / "a-idx3-ubyte.gz")
    assert raw.n == gz.n == 50 and raw.labels is None
    assert np.array_equal(read_all(raw), x)
    assert np.array_equal(read_all(gz, 16), x)


def test_gzip_idx_is_read_batch_by_batch(tmp_path):
    x = images(40)
    write_idx(tmp_path / "a.gz", x)
    src = open_source(tmp_path / "a.gz")
    sizes = [len(b) for b in src.batches(16)]
    assert sizes == [16, 16, 8]


def test_npy_streamed_not_mapped_and_float(tmp_path):
    x = images(30)
    np.save(tmp_path / "u8.npy", x)
    np.save(tmp_path / "f32.npy", (x / 255).astype(np.float32)[:, None])
    np.save(tmp_path / "fortran.npy", np.asfortranarray(x))
    src = open_source(tmp_path / "u8.npy")
    assert src.n == 30 and not hasattr(src, "array")  # read a batch at a time, never memory-mapped
    assert np.array_equal(read_all(src), x)
    with pytest.raises(InputError, match="Fortran-ordered array cannot be read a batch at a time; save it C-ordered"):
        open_source(tmp_path / "fortran.npy")
    assert np.array_equal(read_all(open_source(tmp_path / "f32.npy")), (x / 255).astype(np.float32)[:, None])


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_images_and_labels(tmp_path, save):
    x, labels = images(25), np.arange(25) % 3 == 0
    save(tmp_path / "a.npz", images=x, is_anomaly=labels, other=np.zeros(3))
    src = open_source(tmp_path / "a.npz")
    assert src.n == 25 and np.array_equal(src.labels, labels)
    assert np.array_equal(read_all(src), x)


def test_npz_single_unnamed_array(tmp_path):
    x = images(4)
    np.savez(tmp_path / "a.npz", x)
    assert np.array_equal(read_all(open_source(tmp_path / "a.npz")), x)


def test_png_folder_in_name_order_and_single_png(tmp_path):
    x = images(5)
    for i, name in enumerate(["b.png", "a.png", "d.PNG", "c.png", "e.png"]):
        write_png(tmp_path / name, x[i], ["sub", "paeth", "average", "up", "none"][i])
    (tmp_path / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored
    src = open_source(tmp_path)
    assert src.n == 5 and [p.name for p in src.files] == ["a.png", "b.png", "c.png", "d.PNG", "e.png"]
    assert np.array_equal(read_all(src, 2), x[[1, 0, 3, 2, 4]])
    assert np.array_equal(read_all(open_source(tmp_path / "c.png")), x[3:4])


def test_png_folder_thread_pool_matches_the_array_and_names_a_bad_file(tmp_path):
    from aeflow.runtime.inputs import PngFolderSource

    x = images(300, seed=4)
    for i, im in enumerate(x):
        write_png(tmp_path / f"{i:04d}.png", im, ["paeth", "sub", "up"])
    for threads in (1, 3):
        src = PngFolderSource(tmp_path, threads=threads)
        assert np.array_equal(read_all(src, 64), x)
    (tmp_path / "0250.png").write_bytes(encode_png(x[0])[:70])
    with pytest.raises(InputError, match="0250.png"):
        read_all(PngFolderSource(tmp_path, threads=2), 64)


def test_sniffs_format_without_suffix(tmp_path):
    x = images(3)
    np.save(tmp_path / "a.npy", x)
    (tmp_path / "a.npy").rename(tmp_path / "plain")
    write_idx(tmp_path / "idxgz", x, compress=True)
    assert np.array_equal(read_all(open_source(tmp_path / "plain")), x)
    assert np.array_equal(read_all(open_source(tmp_path / "idxgz")), x)


# ---------------------------------------------------------------- array checks

@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (3, 28, 28), (3, 784), (3, 28, 28, 1)])
def test_accepted_shapes_give_the_same_floats(shape):
    x = images(3)
    out = to_float32(x.reshape(shape), "x")
    assert out.shape == (3, 1, 28, 28) and out.dtype == np.float32
    assert np.array_equal(out, x[:, None].astype(np.float32) / np.float32(255))


def test_float32_batch_is_not_copied_and_uint8_fills_the_buffer():
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    assert np.shares_memory(to_float32(x, "x"), x)
    buf = np.empty((8, 1, 28, 28), dtype=np.float32)
    assert np.shares_memory(to_float32(images(4), "x", out=buf), buf)


@pytest.mark.parametrize("shape, words", [
    ((28, 28), ["(28, 28)", "x[None]"]),
    ((784,), ["1-D", "reshape"]),
    ((10,), ["1-D"]),
    ((2, 32, 32), ["32x32", "resize"]),
    ((2, 3, 28, 28), ["colour", "greyscale"]),
    ((2, 28, 28, 3), ["colour"]),
    ((2, 100), ["100 values"]),
    ((0, 28, 28), ["no images"]),
])
def test_shape_errors_name_the_shape_and_what_is_accepted(shape, words):
    with pytest.raises(InputError) as e:
        check_layout(shape, np.uint8, "x.npy")
    msg = one_line_error(e)
    assert msg.startswith("x.npy: ") and str(shape) in msg
    assert all(w in msg for w in words), msg
    if shape[0] != 0:
        assert "[N, 28, 28]" in msg


@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (2, 28, 28, 3), (2, 28, 28, 4), (2, 4, 20, 32)])
def test_colour_is_named_when_the_size_comes_from_the_images(shape, tmp_path):
    """Training (image_shape=None) said 'does not say the image size; reshape it to [N, H, W]' of colour arrays,
    and x.reshape(N, 28, 84) then trained on interleaved channels: it says what scoring says."""
    with pytest.raises(InputError) as want:
        check_layout(shape, np.uint8, "x.npy", image_shape=shape[1:3] if shape[3] in (3, 4) else shape[2:])
    with pytest.raises(InputError) as got:
        check_layout(shape, np.uint8, "x.npy", image_shape=None)
    assert one_line_error(got) == str(want.value) and "colour images" in str(want.value)
    np.save(tmp_path / "rgb.npy", np.zeros(shape, np.uint8))
    with pytest.raises(InputError, match="colour images: aeflow scores greyscale, convert them to one channel"):
        read_images([tmp_path / "rgb.npy"])


@pytest.mark.parametrize("shape", [(2, 28, 28, 2), (2, 28, 28, 8), (2, 1, 28, 28, 1)])
def test_other_channels_are_not_told_to_reshape(shape):
    """[N, H, W, C] of other C does not say its size either, but reshaping it to [N, H, W * C] interleaves them."""
    with pytest.raises(InputError) as e:
        check_layout(shape, np.uint8, "x.npy", image_shape=None)
    msg = one_line_error(e)
    assert "not a batch of greyscale images" in msg and "reshape" not in msg and "[N, H, W, 1]" in msg


@pytest.mark.parametrize("dtype, word", [
    (np.int64, "int64"), (np.bool_, "bool"), (np.complex64, "complex"), (object, "object"), ("<U3", "strings"),
    (np.uint16, "uint16"),
])
def test_dtype_errors_name_the_dtype_and_what_to_pass(dtype, word):
    with pytest.raises(InputError) as e:
        check_layout((2, 28, 28), np.dtype(dtype), "x")
    msg = one_line_error(e)
    assert word in msg and "uint8" in msg


def test_nan_and_inf_name_the_images():
    x = np.full((20, 28, 28), 0.5)
    bad = [2, 5, 7, 11, 12, 13, 19]
    x[bad, 3, 3] = np.nan
    x[7, 0, 0] = np.inf
    with pytest.raises(InputError) as e:
        to_float32(x, "x", offset=100)
    msg = one_line_error(e)
    assert "images 102, 105, 107, 111, 112 and 2 more (7 in all)" in msg and "NaN or Inf" in msg


@pytest.mark.parametrize("scale, hint", [
    (255.0, "divide by 255"), (2.0, "pass (x + 1) / 2"), (1.0, "standardised"), (1000.0, "rescale"),
])
def test_out_of_range_floats_suggest_the_scale(scale, hint):
    x = images(4).astype(np.float32) / 255
    if scale == 2.0:
        x = x * 2 - 1
    elif scale == 1.0:
        x = (x - 0.1307) / 0.3081
    else:
        x = x * scale
    with pytest.raises(InputError) as e:
        to_float32(x, "x")
    msg = one_line_error(e)
    assert hint in msg and "expected [0, 1]" in msg


def squares(n: int = 4, ring: float = 0.12) -> np.ndarray:
    """White squares on black, float32 [n, 28, 28]; ``ring`` > 0 sharpens their edges (x + ring * (2x - the two
    neighbours) on each axis) beyond [0, 1] by up to 2 * ring, as a bicubic resize or an unsharp mask does."""
    x = np.zeros((n, 28, 28), np.float32)
    for i in range(n):
        x[i, 4 + i:18 + i, 6:20 - i] = 1
    for axis in (1, 2):
        x = x + ring * (2 * x - np.roll(x, 1, axis) - np.roll(x, -1, axis))
    return x


@pytest.mark.parametrize("edit", [lambda x: x, lambda x: np.minimum(x, 1), lambda x: np.maximum(x, 0)])
def test_a_small_overshoot_is_told_to_clip(edit):
    """A resize's or sharpening's ringing (-0.24..1.24 at a few edge pixels) was read as standardised data or
    [-1, 1] normalisation, whose advice is accepted and gives other images: the advice is np.clip."""
    x = edit(squares())
    with pytest.raises(InputError) as e:
        to_float32(x, "x")
    msg = one_line_error(e)
    assert "clip them, np.clip(x, 0, 1)" in msg and "standardised" not in msg and "(x + 1) / 2" not in msg
    assert to_float32(np.clip(x, 0, 1), "x").min() >= 0


@pytest.mark.parametrize("transform, hint", [
    (lambda x: x - 0.1307, "rescale the pixels to [0, 1]"),  # shifted: most pixels beyond, no overshoot
    (lambda x: (x - 0.485) / 0.229, "undo it with the mean and std used"),  # not MNIST's constants
    (lambda x: x * 2.6 - 1.3, "undo it with the mean and std used"),  # [-1, 1] resized: not (x + 1) / 2
    (lambda x: (x - 0.1307) / 0.3081, "x * 0.3081 + 0.1307"),
])
def test_range_hints_fire_only_where_they_fit(transform, hint):
    with pytest.raises(InputError) as e:
        to_float32(transform(squares(ring=0)), "x")
    assert hint in one_line_error(e)


def test_labels_must_match_the_images(tmp_path):
    np.savez(tmp_path / "a.npz", images=images(4), is_anomaly=np.zeros(3, bool))
    with pytest.raises(InputError) as e:
        open_source(tmp_path / "a.npz")
    assert "is_anomaly" in one_line_error(e)


def test_array_source_refuses_ragged_lists():
    with pytest.raises(InputError) as e:
        ArraySource([[1, 2], [3]])
    one_line_error(e)


# ---------------------------------------------------------------- file errors

def _flip(path, start: int, stop_from_end: int, step: int) -> None:
    """Flip bits in every ``step``-th byte of ``path`` from ``start`` to ``stop_from_end``."""
    data = bytearray(path.read_bytes())
    for i in range(start, len(data) + stop_from_end, step):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep if keep >= 0 else len(data) + keep])


def make_error_case(tmp_path, case: str):
    x = images(40)
    p = tmp_path / "in"
    if case == "missing":
        return tmp_path / "nope.npy"
    if case == "empty file":
        p = tmp_path / "e.npy"
        p.write_bytes(b"")
    elif case == "empty folder":
        p.mkdir()
    elif case == "folder with other files":
        p.mkdir()
        write_png(p / "a.png", x[0])
        (p / "notes.txt").write_text("hi")
    elif case == "folder of sub-folders":
        (p / "0").mkdir(parents=True)
        write_png(p / "0" / "a.png", x[0])
    elif case == "png folder wrong size":
        p.mkdir()
        write_png(p / "a.png", x[0])
        write_png(p / "b.png", np.zeros((32, 32), np.uint8))
    elif case == "png rgb":
        p = tmp_path / "a.png"
        p.write_bytes(png_with_header(colour=2))
    elif case == "npy truncated":
        p = tmp_path / "a.npy"
        np.save(p, x)
        _cut(p, -100)
    elif case == "npy bad magic":
        p = tmp_path / "a.npy"
        p.write_bytes(b"this is not numpy at all")
    elif case == "npy object":
        p = tmp_path / "a.npy"
        np.save(p, np.array([None, 1], dtype=object), allow_pickle=True)
    elif case == "npy zero images":
        p = tmp_path / "a.npy"
        np.save(p, np.zeros((0, 28, 28), np.uint8))
    elif case == "npz truncated":
        p = tmp_path / "a.npz"
        np.savez_compressed(p, images=x)
        _cut(p, 200)
    elif case == "npz stored truncated":
        p = tmp_path / "a.npz"
        np.savez(p, images=x)
        _cut(p, -40)
    elif case == "npz corrupted":
        p = tmp_path / "a.npz"
        np.savez_compressed(p, images=x)
        _flip(p, 300, -400, 37)
    elif case == "npz no images":
        p = tmp_path / "a.npz"
        np.savez(p, a=x, b=x)
    elif case == "idx bad magic":
        p = tmp_path / "a-idx3-ubyte"
        write_idx(p, x)
        data = bytearray(p.read_bytes())
        data[2] = 0x07  # no IDX type (0x0D, float32, is named: test_idx)
        p.write_bytes(bytes(data))
    elif case == "idx promises more":
        p = tmp_path / "a-idx3-ubyte"
        write_idx(p, x)
        _cut(p, -1)
    elif case == "idx labels":
        p = tmp_path / "a-idx1-ubyte"
        write_idx(p, np.arange(10, dtype=np.uint8))
    elif case == "gz truncated":
        p = tmp_path / "a.gz"
        write_idx(p, x, compress=True)
        _cut(p, -500)
    elif case == "gz short data":
        p = tmp_path / "a.gz"
        raw = struct.pack(">HBB3I", 0, 8, 3, 40, 28, 28) + x[:30].tobytes()
        p.write_bytes(gzip.compress(raw))
    elif case == "gz corrupted":
        p = tmp_path / "a.gz"
        write_idx(p, x, compress=True)
        _flip(p, 100, -20, 50)
    elif case == "unknown format":
        p = tmp_path / "a.txt"
        p.write_text("hello, world\n")
    return p


ERROR_CASES = {
    "missing": "no such file", "empty file": "empty", "empty folder": "no PNG images",
    "folder with other files": "notes.txt", "folder of sub-folders": "sub-folders", "png folder wrong size": "32x32",
    "png rgb": "RGB", "npy truncated": "truncated", "npy bad magic": "not a readable .npy", "npy object": "object",
    "npy zero images": "no images", "npz truncated": "npz", "npz stored truncated": "truncated",
    "npz no images": "'images'", "idx bad magic": "magic", "idx promises more": "truncated", "idx labels": "labels",
    "gz truncated": "corrupted or truncated", "npz corrupted": "corrupted", "gz short data": "truncated", "gz corrupted": "corrupted", "unknown format": "unknown format",
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_every_file_error_is_one_input_error(tmp_path, case):
    path = make_error_case(tmp_path, case)
    with pytest.raises(InputError) as e:
        src = open_source(path)
        for _ in src.batches(16):  # some damage only shows while streaming
            pass
    msg = one_line_error(e)
    assert ERROR_CASES[case] in msg, msg


def test_a_finite_pixel_beyond_float32_and_a_range_up_to_two_are_named_as_they_are():
    """A finite 1e39 was called 'NaN or Inf' after a RuntimeWarning; pixels up to 2 were said to
    'look like 0..255'."""
    import warnings

    x = np.random.default_rng(0).random((3, 28, 28))
    big = x.copy()
    big[1, 0, 0] = 1e39
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=r"NaN or Inf \(or beyond float32's range\) in image 1;"):
            to_float32(big, "big.npy")
    with pytest.raises(InputError) as e:
        to_float32(x * 2, "two.npy")
    assert "rescale the pixels to [0, 1]" in str(e.value) and "0..255" not in str(e.value)
