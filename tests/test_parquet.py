"""Parquet without Dask: image columns of every accepted type read in streamed batches, labels,
windows, one-line errors, and `aeflow score -o x.parquet`."""

from __future__ import annotations

import io

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from aeflow.errors import InputError  # noqa: E402
from aeflow.runtime import AnomalyScorer, demo_images, open_source  # noqa: E402
from aeflow.runtime.outputs import COLUMNS  # noqa: E402
from conftest import assert_one_line_error, run_cli  # noqa: E402

X = demo_images()[:120]


def png(image) -> bytes:
    from PIL import Image

    f = io.BytesIO()
    Image.fromarray(image).save(f, "PNG")
    return f.getvalue()


def write(tmp_path, name: str, columns: dict, **kw):
    path = tmp_path / name
    pq.write_table(pa.table(columns), path, **kw)
    return path


def read_all(src, size: int) -> np.ndarray:
    with src:
        batches = list(src.batches(size))
    assert all(len(b) <= size for b in batches)
    return np.concatenate(batches)


COLUMN_TYPES = {
    "png": lambda: pa.array([png(im) for im in X], pa.binary()),
    "large_png": lambda: pa.array([png(im) for im in X], pa.large_binary()),
    "raw784": lambda: pa.array([im.tobytes() for im in X], pa.binary()),
    "mixed": lambda: pa.array([png(im) if i % 2 else im.tobytes() for i, im in enumerate(X)], pa.binary()),
    "fixed": lambda: pa.array([im.tobytes() for im in X], pa.binary(784)),
    "list": lambda: pa.array([im.ravel().tolist() for im in X], pa.list_(pa.uint8())),
    "large_list": lambda: pa.array([im.ravel().tolist() for im in X], pa.large_list(pa.uint8())),
    "fixed_list": lambda: pa.array([im.ravel().tolist() for im in X], pa.list_(pa.uint8(), 784)),
}


@pytest.mark.parametrize("kind", sorted(COLUMN_TYPES))
def test_every_image_column_type(tmp_path, kind):
    path = write(tmp_path, "x.parquet", {"id": pa.array(range(len(X))), "image": COLUMN_TYPES[kind]()},
                 row_group_size=37)
    src = open_source(path)
    assert src.n == len(X) and src.labels is None and src.column == "image"
    assert np.array_equal(read_all(src, 16), X)
    assert np.array_equal(read_all(open_source(path).window(30, 95), 16), X[30:95])


def test_column_option_labels_and_sniffing(tmp_path):
    labels = np.arange(len(X)) % 4 == 0
    path = write(tmp_path, "data.bin", {"a": COLUMN_TYPES["list"](), "b": COLUMN_TYPES["png"](),
                                        "is_anomaly": pa.array(labels.astype(np.int8))})
    with pytest.raises(InputError, match="name the image column"):
        open_source(path)
    src = open_source(path, column="b")  # found by its magic bytes, not its suffix
    assert np.array_equal(src.labels, labels) and np.array_equal(read_all(src, 50), X)
    only = write(tmp_path, "only.parquet", {"pix": COLUMN_TYPES["fixed"]()})
    assert open_source(only).column == "pix"
    scorer = AnomalyScorer(device="cpu")
    assert np.array_equal(scorer.score_source(open_source(path, column="a")), scorer.score(X))


@pytest.mark.parametrize("column, message", [
    (pa.array([X[0].tobytes(), None], pa.binary()), "row 1): null image"),
    (pa.array([X[0].tobytes(), b"\x00" * 100], pa.binary()), "100 bytes, neither a PNG nor 784 raw pixels"),
    (pa.array([list(range(10))], pa.list_(pa.uint8())), "a list of 10 values"),
    (pa.array([1.0, 2.0]), "images must be binary"),
    (pa.array([png(X[0]), png(X[0])[:50]], pa.binary()), "row 1)"),
])
def test_bad_columns_one_line(tmp_path, column, message):
    path = write(tmp_path, "x.parquet", {"image": column})
    with pytest.raises(InputError) as e:
        read_all(open_source(path), 8)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_not_parquet_and_missing_column(tmp_path):
    path = write(tmp_path, "x.parquet", {"image": COLUMN_TYPES["png"]()})
    with pytest.raises(InputError, match="no column 'pix'"):
        open_source(path, column="pix")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="not a readable Parquet file"):
        open_source(broken)


def test_cli_parquet_in_and_out(tmp_path):
    src = write(tmp_path, "in.parquet", {"pixels": COLUMN_TYPES["list"]()})
    np.save(tmp_path / "in.npy", X)
    out = tmp_path / "out.parquet"
    proc = run_cli("score", str(src), str(tmp_path / "in.npy"), "--column", "pixels", "-o", str(out), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    assert tuple(table.column_names) == COLUMNS and table.num_rows == 2 * len(X)
    scores = AnomalyScorer(device="cpu").score(X)
    assert np.array_equal(table.column("score").to_numpy(), np.concatenate([scores, scores]))
    assert table.column("label_anomaly").null_count == 2 * len(X)
    assert table.column("source").to_pylist()[0] == str(src)
    again = run_cli("score", str(src), "--column", "pixels", "-o", str(out))
    assert "--force" in assert_one_line_error(again, 1)
