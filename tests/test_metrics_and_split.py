import numpy as np
import pytest

from aeflow.datasets import mixture_of_gaussians, split_indices
from aeflow.metrics import auroc, roc_curve, threshold_for_type_i, threshold_from_scores, type_i_error, type_ii_error


@pytest.mark.parametrize("n, n_train, n_val", [(60000, 50000, 10000), (5000, 4167, 833)])
def test_split_sizes_as_homework(n, n_train, n_val):
    train, val = split_indices(n, seed=0)
    assert (len(train), len(val)) == (n_train, n_val)
    assert len(np.intersect1d(train, val)) == 0
    assert len(np.union1d(train, val)) == n


def test_split_is_seeded():
    a, b = split_indices(1000, seed=3), split_indices(1000, seed=3)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], split_indices(1000, seed=4)[1])


def test_threshold_is_mean_plus_k_sample_std():
    scores = np.array([0.01, 0.02, 0.03, 0.04], dtype=np.float32)
    th = threshold_from_scores(scores, k=3)
    mean = 0.025
    std = np.sqrt(sum((s - mean) ** 2 for s in [0.01, 0.02, 0.03, 0.04]) / 3)  # ddof = 1, as torch.std
    assert th.mean == pytest.approx(mean) and th.std == pytest.approx(std)
    assert th.value == pytest.approx(mean + 3 * std) and th.n == 4


def test_threshold_rejects_bad_scores():
    with pytest.raises(ValueError):
        threshold_from_scores(np.array([1.0]))
    with pytest.raises(ValueError):
        threshold_from_scores(np.array([1.0, np.nan]))


def test_error_rates_follow_the_homework():
    normal = np.array([0.1, 0.2, 0.5])
    anomalies = np.array([0.3, 0.5, 0.9, 1.0])
    assert type_i_error(normal, 0.3) == pytest.approx(1 / 3)  # score > threshold is flagged
    assert type_ii_error(anomalies, 0.5) == pytest.approx(2 / 4)  # score <= threshold is missed


def test_auroc_matches_pairwise_count():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 200).round(1), rng.normal(1, 1, 150).round(1)
    pairs = (b[:, None] > a[None, :]).mean() + 0.5 * (b[:, None] == a[None, :]).mean()
    assert auroc(a, b) == pytest.approx(pairs)
    fpr, tpr, _ = roc_curve(a, b)
    assert np.trapezoid(tpr, fpr) == pytest.approx(pairs, abs=1e-9)


def test_threshold_for_one_percent_type_i():
    scores = np.arange(1000, dtype=np.float64)
    t = threshold_for_type_i(scores, 0.01)
    assert type_i_error(scores, t) <= 0.01
    assert type_i_error(scores, t - 1) > 0.01


def test_mixture_data_is_seeded_and_sized():
    x = mixture_of_gaussians(5000, seed=0)
    assert x.shape == (5000,) and x.dtype == np.float32
    np.testing.assert_array_equal(x, mixture_of_gaussians(5000, seed=0))
    assert abs(float(x.mean()) - (-1 + 0.2 + 1.5) / 3) < 0.05
