"""Images of another size than 28x28 (32x32 and 64x48, height x width) through every reader, the
size taken from the data (``read_images``), one-line refusals naming both sizes, and reader
findings of issue 17 (a .npz label header claiming 10^13 entries, np.matrix, data-dir hints)."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest

from aeflow.errors import DataError, InputError
from aeflow.runtime.inputs import ArraySource, open_source, read_images, to_float32
from conftest import write_idx
from pngdata import encode_png, write_png

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SHAPES = [(32, 32), (64, 48)]


def images(n: int, shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def pillow_png(image, comment: str = "") -> bytes:
    from PIL import Image, PngImagePlugin

    f = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    if comment:
        info.add_text("Comment", comment)
    Image.fromarray(image).save(f, "PNG", pnginfo=info)
    return f.getvalue()


def read_all(src, size: int = 5) -> np.ndarray:
    with src:
        return np.concatenate(list(src.batches(size)))


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def write_every_format(d, x, labels):
    """x uint8 [n, H, W] in every format: {path: what it reads as (uint8 [n, H, W])}."""
    n, h, w = x.shape
    np.save(d / "a.npy", x)
    np.save(d / "chw.npy", x[:, None].astype(np.float32) / 255)
    np.save(d / "hwc.npy", x[..., None])
    np.savez_compressed(d / "b.npz", images=x, is_anomaly=labels)
    write_idx(d / "c-idx3-ubyte", x)
    write_idx(d / "c-idx3-ubyte.gz", x)
    (d / "pngs").mkdir()
    for i, im in enumerate(x):
        write_png(d / "pngs" / f"{i:03d}.png", im)
    (d / "one.png").write_bytes(pillow_png(x[0]))
    columns = {
        "png": pa.array([pillow_png(im) for im in x], pa.binary()),
        "raw": pa.array([im.tobytes() for im in x], pa.binary()),
        "fixed": pa.array([im.tobytes() for im in x], pa.binary(h * w)),
        "list": pa.array([im.ravel().tolist() for im in x], pa.list_(pa.uint8())),
        "fixed_list": pa.array([im.ravel().tolist() for im in x], pa.list_(pa.uint8(), h * w)),
    }
    for kind, column in columns.items():
        pq.write_table(pa.table({"image": column, "is_anomaly": pa.array(labels)}), d / f"{kind}.parquet",
                       row_group_size=4)
    return {"a.npy": x, "chw.npy": x, "hwc.npy": x, "b.npz": x, "c-idx3-ubyte": x, "c-idx3-ubyte.gz": x,
            "pngs": x, "one.png": x[:1], **{f"{kind}.parquet": x for kind in columns}}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_format_reads_images_of_the_given_size(tmp_path, shape):
    x = images(11, shape)
    labels = np.arange(11) % 3 == 0
    for name, expected in write_every_format(tmp_path, x, labels).items():
        src = open_source(tmp_path / name, image_shape=shape)
        assert src.image_shape == shape and src.n == len(expected), name
        got = np.concatenate([to_float32(b, name, image_shape=shape) for b in src.batches(4)])
        np.testing.assert_allclose(got, expected[:, None] / np.float32(255), rtol=0, atol=1e-7, err_msg=name)
        if name in ("b.npz",) or name.endswith(".parquet"):
            assert np.array_equal(src.labels, labels), name
        if hasattr(src, "window") and len(expected) > 7:
            part = np.concatenate([to_float32(b, name, image_shape=shape) for b in src.window(2, 7).batches(3)])
            np.testing.assert_allclose(part, expected[2:7, None] / np.float32(255), rtol=0, atol=1e-7, err_msg=name)
    flat = ArraySource(x.reshape(11, -1), image_shape=shape)
    assert np.array_equal(read_all(flat).reshape(x.shape), x)


@pytest.mark.parametrize("shape", SHAPES)
def test_read_images_takes_the_size_from_the_data(tmp_path, shape):
    x = images(9, shape)
    labels = np.arange(9) % 2 == 0
    expected = write_every_format(tmp_path, x, labels)
    for name in expected:
        if name in ("raw.parquet", "fixed.parquet", "list.parquet", "fixed_list.parquet"):
            with pytest.raises(InputError) as e:  # raw pixels do not say their size
                read_images([tmp_path / name])
            assert "image_shape" in one_line(e)
            got, _, found = read_images([tmp_path / name], image_shape=shape)
        else:
            got, _, found = read_images([tmp_path / name])
        assert found == shape, name
        if name == "chw.npy":
            assert got.dtype == np.float32 and np.allclose(got * 255, x, atol=1e-4)
        else:
            assert got.dtype == np.uint8 and np.array_equal(got, expected[name]), name
    got, labs, _ = read_images([str(tmp_path / "b.npz"), str(tmp_path / "a.npy")])  # labels of a.npy: False
    assert np.array_equal(labs, np.concatenate([labels, np.zeros(9, bool)])) and len(got) == 18
    got, labs, found = read_images(str(tmp_path / "pngs" / "*.png"))  # a quoted glob
    assert found == shape and np.array_equal(got, x) and labs is None
    mixed, _, _ = read_images([tmp_path / "a.npy", tmp_path / "chw.npy"])  # uint8 with floats: float32
    assert mixed.dtype == np.float32 and np.allclose(mixed[:9] * 255, x)


@pytest.mark.parametrize("shape", SHAPES)
def test_another_size_is_one_line_naming_both(tmp_path, shape):
    x = images(6, (28, 28))
    write_every_format(tmp_path, x, np.zeros(6, bool))
    want = "x".join(map(str, shape))
    for name in ["a.npy", "chw.npy", "hwc.npy", "b.npz", "c-idx3-ubyte", "c-idx3-ubyte.gz", "pngs", "one.png",
                 "png.parquet", "raw.parquet", "fixed.parquet", "list.parquet", "fixed_list.parquet"]:
        with pytest.raises(InputError) as e:
            read_all(open_source(tmp_path / name, image_shape=shape))
        msg = one_line(e)
        assert want in msg and ("28x28" in msg or "784" in msg), (name, msg)
    with pytest.raises(InputError) as e:
        ArraySource(x.reshape(6, -1), image_shape=shape)
    assert "784" in one_line(e) and str(shape[0] * shape[1]) in one_line(e)


def test_read_images_refuses_mixed_flat_and_absurd_sizes(tmp_path):
    np.save(tmp_path / "a.npy", images(3, (32, 32)))
    np.save(tmp_path / "b.npy", images(3, (28, 28)))
    with pytest.raises(InputError) as e:
        read_images([tmp_path / "a.npy", tmp_path / "b.npy"])
    assert "28x28" in one_line(e) and "32x32" in one_line(e)
    (tmp_path / "m").mkdir()
    write_png(tmp_path / "m" / "a.png", images(1, (32, 32))[0])
    write_png(tmp_path / "m" / "b.png", images(1, (64, 48))[0])
    with pytest.raises(InputError) as e:
        read_images([tmp_path / "m"])
    assert "32x32" in one_line(e) and "64x48" in one_line(e)
    np.save(tmp_path / "flat.npy", images(3, (32, 32)).reshape(3, -1))
    with pytest.raises(InputError) as e:
        read_images([tmp_path / "flat.npy"])
    assert "image_shape" in one_line(e)
    assert read_images([tmp_path / "flat.npy"], image_shape=(32, 32))[2] == (32, 32)
    for absurd in [(3, 1, 2), (2, 8000, 2)]:
        np.save(tmp_path / "odd.npy", np.zeros(absurd, np.uint8))
        with pytest.raises(InputError) as e:
            read_images([tmp_path / "odd.npy"])
        assert "4 to 1,024 pixels a side" in one_line(e)
    with pytest.raises(InputError, match="no file or folder matches"):
        read_images([str(tmp_path / "nothing*.npy")])


def test_npz_label_header_claiming_10e13_entries_fails_before_allocating(tmp_path):
    """Every member's header is checked against its size before anything is read."""
    path = tmp_path / "huge.npz"
    np.savez(path, images=images(4, (28, 28)), is_anomaly=np.zeros(4, bool))
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|b1", "fortran_order": False, "shape": (10**13,)})
    members["is_anomaly.npy"] = b"\x93NUMPY\x01\x00" + head.getvalue()[8:] + bytes(4)
    with zipfile.ZipFile(path, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)
    with pytest.raises(InputError) as e:
        open_source(path)
    assert "10000000000000" in one_line(e) and "is_anomaly" in one_line(e)
    np.savez(path, images=images(4, (28, 28)), is_anomaly=np.zeros(5, bool))
    with pytest.raises(InputError, match="'is_anomaly' has shape"):
        open_source(path)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_np_matrix_is_read_as_the_2d_array_it_holds():
    x = images(5, (28, 28)).reshape(5, 784)
    src = ArraySource(np.asmatrix(x))
    assert type(src.array) is np.ndarray
    assert np.array_equal(to_float32(next(src.batches(8)), "m"), x.reshape(5, 1, 28, 28) / np.float32(255))
    from aeflow.runtime import AnomalyScorer

    scorer = AnomalyScorer(device="cpu")
    assert np.array_equal(scorer.score(np.asmatrix(x)), scorer.score(x))
    with pytest.raises(InputError) as e:
        ArraySource(np.ma.masked_array(x, mask=x > 100))
    assert "masked" in one_line(e)


def test_png_header_of_another_size_refused_before_decoding():
    blob = bytearray(encode_png(images(1, (28, 28))[0]))
    blob[16:24] = struct.pack(">II", 100000, 100000)  # a header that claims a huge image
    from aeflow.runtime.pngfiles import decode_many

    with pytest.raises(InputError) as e:
        decode_many([bytes(blob)], ["x.png"])
    assert "100000x100000" in one_line(e) and "28x28" in one_line(e)


def test_data_dir_hint_names_the_file_the_reader_wants(tmp_path):
    from aeflow.analysis.evaluation import load_sets
    from aeflow.datasets import load_images

    for name in ("mnist", "fashion-mnist"):
        with pytest.raises(DataError) as e:
            load_images(name, "test", tmp_path)
        assert f"{name}/t10k-images-idx3-ubyte[.gz]" in one_line(e)
        (tmp_path / name).mkdir()
        write_idx(tmp_path / name / "t10k-images-idx3-ubyte.gz", images(3, (28, 28)))
    with pytest.raises(DataError) as e:  # the homework's default anomaly set (KMNIST) is not there
        load_sets("mnist-test", None, tmp_path)
    assert "DIR/fashion-mnist/t10k-images-idx3-ubyte[.gz]" in one_line(e)
    assert load_sets("mnist-test", ("fashion-mnist-test",), tmp_path)[1].images.shape == (3, 28, 28)


def test_plain_inputs_never_import_pyarrow(tmp_path):
    """.npy, .npz, IDX and PNG are read without importing pyarrow (or the Parquet reader)."""
    import subprocess
    import sys

    x = images(3, (32, 32))
    write_every_format(tmp_path, x, np.zeros(3, bool))
    code = ("import sys; from aeflow.runtime.inputs import read_images; "
            f"read_images([{str(tmp_path)!r} + '/' + n for n in ['a.npy', 'b.npz', 'c-idx3-ubyte.gz', 'pngs', "
            "'one.png']]); print(sorted(m for m in sys.modules if 'pyarrow' in m or m.endswith('parquet')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_png_files_over_one_mebibyte_read_whole(tmp_path):
    """A PNG of random 1000x1000 pixels and a 200 kB comment (1.2 MB) is read whole, not refused as truncated."""
    x = images(1, (1000, 1000), seed=5)[0]
    (tmp_path / "big.png").write_bytes(pillow_png(x, "x" * 200_000))
    assert (tmp_path / "big.png").stat().st_size > (1 << 20) + (1 << 16)
    got, _, shape = read_images([tmp_path / "big.png"])
    assert shape == (1000, 1000) and np.array_equal(got[0], x)
