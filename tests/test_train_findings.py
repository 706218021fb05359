"""Regressions from an attacker's report on training: complex values cast silently, plots that
raised after the checkpoint was written, a BOM in an Excel CSV."""

import numpy as np
import pytest

from conftest import assert_one_line_error, invoke_cli

pytest.importorskip("torch")

from aeflow.errors import DataError  # noqa: E402
from aeflow.train.api import FlowModel  # noqa: E402


def test_complex_values_are_refused_not_cast(tmp_path, capfd):
    """The imaginary part was dropped with a ComplexWarning and exit 0."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=500) + 1j * rng.normal(size=500)
    np.save(tmp_path / "vc.npy", values)
    line = assert_one_line_error(invoke_cli("train", "flow", "--data", str(tmp_path / "vc.npy"), "--epochs", "1",
                                            "-o", str(tmp_path / "r"), capfd=capfd), 1)
    assert "complex values (dtype complex128)" in line and not (tmp_path / "r").exists()
    with pytest.raises(DataError, match="complex values"):
        FlowModel(epochs=1).fit(values)
    with pytest.raises(DataError, match="complex values"):
        FlowModel(epochs=1).fit(list(values))
    flow = FlowModel(epochs=1).fit(values.real)
    with pytest.raises(DataError, match="complex values"):
        flow.score_samples(values[:5])
    np.save(tmp_path / "when.npy", np.arange(30).astype("datetime64[s]"))  # another dtype that is no real number
    line = assert_one_line_error(invoke_cli("train", "flow", "--data", str(tmp_path / "when.npy"),
                                            "-o", str(tmp_path / "r"), capfd=capfd), 1)
    assert "dtype datetime64[s]" in line and not (tmp_path / "r").exists()
