import gzip

import numpy as np
import pytest

from aeflow.errors import InputError
from aeflow.runtime.inputs import open_idx, open_source, read_idx_header
from conftest import write_idx


def read_idx(path):
    with open_idx(path, str(path), image_shape=None) as src:
        return np.concatenate(list(src.batches(1000)))


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_round_trip_images(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    path = tmp_path / name
    write_idx(path, images)
    assert read_idx_header(path) == ((7, 28, 28), 16, name.endswith(".gz"))
    np.testing.assert_array_equal(read_idx(path), images)


def test_labels(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "labels", labels)
    assert read_idx_header(tmp_path / "labels")[0] == (10,)
    with pytest.raises(InputError, match="a labels file"):
        read_idx(tmp_path / "labels")


def test_gzip_detected_by_content_not_name(tmp_path):
    images = np.ones((2, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "plain-name", images, compress=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain-name"), images)


def test_bad_magic(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(InputError, match="bad IDX magic number"):
        read_idx(tmp_path / "bad")


def test_header_promises_more_bytes(tmp_path):
    path = tmp_path / "short"
    write_idx(path, np.zeros((5, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated"):
        read_idx(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "short.gz"
    write_idx(path, np.random.default_rng(1).integers(0, 256, (50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(InputError):
        read_idx(path)


def test_gzip_of_garbage(tmp_path):
    (tmp_path / "junk.gz").write_bytes(gzip.compress(b"not an idx file at all"))
    with pytest.raises(InputError, match="magic"):
        read_idx(tmp_path / "junk.gz")


def test_missing_and_empty(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_source(tmp_path / "nope")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(InputError, match="bad IDX magic number 0x00000000"):
        read_idx(tmp_path / "empty")


def test_header_with_a_zero_and_huge_dimensions(tmp_path):
    # found by fuzzing: numpy cannot even describe this shape, though it holds no bytes
    import struct

    (tmp_path / "odd").write_bytes(struct.pack(">HBB4I", 0, 8, 4, 0, 2**21, 2**21, 2**21))
    with pytest.raises(InputError, match="impossible shape"):
        read_idx(tmp_path / "odd")


@pytest.mark.parametrize("code, name", [(0x0D, "float32"), (0x0B, "int16")])
def test_an_idx_file_of_other_values_than_uint8_is_named(tmp_path, code, name):
    """A valid IDX of float32 (type 0x0D) got "bad IDX magic number ... - is this an IDX file?"."""
    import struct

    from aeflow.errors import InputError
    from aeflow.runtime.inputs import read_images

    path = tmp_path / "x.idx"
    path.write_bytes(struct.pack(">HBBIII", 0, code, 3, 2, 28, 28) + bytes(2 * 28 * 28 * 4))
    with pytest.raises(InputError, match=rf"x.idx: an IDX file of {name} values; aeflow reads IDX images of uint8"):
        read_images([path])


def test_a_three_byte_file_of_another_type_is_bad_magic(tmp_path):
    """Three bytes 00 00 0D (float32's type, no dimension count) raised IndexError."""
    (tmp_path / "x.idx").write_bytes(b"\x00\x00\x0d")
    with pytest.raises(InputError, match="bad IDX magic number 0x0000000d"):
        read_idx(tmp_path / "x.idx")
