"""FlowSampler: the graph against PyTorch, every inversion method against a float64 reference,
the truncated normal, errors, seeds and chunking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import copy_artifacts, edit_metadata

from aeflow.errors import ArtifactError, InputError, UsageError
from aeflow.parity import compare
from aeflow.runtime import sampler as sampler_module
from aeflow.runtime.sampler import FlowSampler

_erf = np.frompyfunc(math.erf, 1, 1)
_erfc = np.frompyfunc(math.erfc, 1, 1)


class Reference64:
    """The flow in float64 from flow.json's components (math.erf, math.erfc), inverted by 80 bisection steps."""

    def __init__(self, meta: dict):
        c = meta["components"]
        self.mu, self.sigma, self.w = (np.array(c[k], dtype=np.float64) for k in ("mu", "sigma", "weight"))
        self.half_w = self.w.sum() / 2
        self.bracket = tuple(float(v) for v in meta["x_bracket"])

    def f(self, x):
        t = (np.asarray(x, dtype=np.float64)[:, None] - self.mu) / self.sigma
        return 0.5 * (_erf(t / math.sqrt(2)).astype(np.float64) * self.w).sum(1)

    def fprime(self, x):
        t = (np.asarray(x, dtype=np.float64)[:, None] - self.mu) / self.sigma
        return (self.w / self.sigma * np.exp(-0.5 * t * t)).sum(1) / math.sqrt(2 * math.pi)

    def upper_tail(self, x):
        """W/2 - f(x) without cancellation."""
        t = (np.asarray(x, dtype=np.float64)[:, None] - self.mu) / self.sigma
        return 0.5 * (_erfc(t / math.sqrt(2)).astype(np.float64) * self.w).sum(1)

    def lower_tail(self, x):
        """f(x) + W/2 without cancellation."""
        t = (np.asarray(x, dtype=np.float64)[:, None] - self.mu) / self.sigma
        return 0.5 * (_erfc(-t / math.sqrt(2)).astype(np.float64) * self.w).sum(1)

    def invert(self, z):
        """f^-1(z) by bisection, comparing the tail masses (W/2 -+ f) so it stays exact up to +-W/2."""
        z = np.asarray(z, dtype=np.float64)
        lo, hi = np.full(z.shape, self.bracket[0]), np.full(z.shape, self.bracket[1])
        upper = z >= 0
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            below = np.where(upper, self.upper_tail(mid) > self.half_w - z, self.lower_tail(mid) < z + self.half_w)
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def cdf(self, x):
        """CDF of the samples: N(0, 1) truncated to (-W/2, W/2), pushed through f^-1."""
        phi = lambda v: 0.5 * (1 + np.asarray(_erf(np.asarray(v, dtype=np.float64) / math.sqrt(2)), dtype=np.float64))
        a = self.half_w
        return (phi(self.f(x)) - phi(-a)) / (phi(a) - phi(-a))


@pytest.fixture(scope="module")
def sampler() -> FlowSampler:
    return FlowSampler(device="cpu")


@pytest.fixture(scope="module")
def ref(sampler) -> Reference64:
    return Reference64(sampler.metadata.to_json())


@pytest.fixture(scope="module")
def targets(sampler) -> np.ndarray:
    """6000 draws of the truncated normal plus the hard cases: both edges, zero, the bulk's ends."""
    z = sampler.draw_z(np.random.default_rng(7), 6000)
    a = sampler.z_range[1]
    edges = [a - 1e-15, a - 1e-12, a - 1e-9, a - 2e-7, a - 1e-6, a - 1e-4, 3.0, 0.0, -3.0, -a + 1e-4, -a + 1e-9,
             -a + 1e-15]
    return np.concatenate([z, edges])


@pytest.fixture(scope="module")
def x_ref(ref, targets) -> np.ndarray:
    return ref.invert(targets)


def test_properties(sampler):
    meta = sampler.metadata.to_json()
    assert sampler.provider == "CPUExecutionProvider"
    assert sampler.z_range == pytest.approx((-meta["W"] / 2, meta["W"] / 2), rel=1e-12)
    assert sampler.methods[0] == sampler.method == "graph"
    assert set(sampler.methods) == {"table", "graph", "newton", "bisection"}
    # default bisection steps follow the bracket: ceil(log2(width / float32 resolution))
    lo, hi = meta["x_bracket"]
    assert sampler.default_iterations("bisection") == math.ceil(math.log2((hi - lo) / np.finfo(np.float32).eps))


def test_forward_matches_pytorch(sampler, bundled):
    torch = pytest.importorskip("torch")
    from aeflow.export.reference import load_flow

    flow, _ = load_flow(bundled / "flow.pt")
    x = np.concatenate([np.linspace(-5, 5, 2001), np.random.default_rng(0).normal(0, 2, 3000)]).astype(np.float32)
    z, dz, lp = sampler.forward(x)
    assert z.dtype == dz.dtype == lp.dtype == np.float32 and z.shape == x.shape
    with torch.inference_mode():
        tz, tdz, tlp = (t.numpy() for t in flow(torch.from_numpy(x)))
    assert compare("z", z, tz, atol=1e-5, rtol=0).passed
    assert compare("dz_dx", dz, tdz, atol=0, rtol=1e-5).passed
    assert compare("log_prob", lp, tlp).passed


@pytest.mark.parametrize("method", ["table", "newton"])
def test_exact_methods_within_1e5_of_float64(sampler, targets, x_ref, method):
    x = sampler.invert(targets, method=method)
    assert x.dtype == np.float32 and x.shape == targets.shape
    err = np.abs(x.astype(np.float64) - x_ref)
    assert err.max() <= 1e-5, (err.max(), targets[err.argmax()])


def test_edge_targets_solve_the_tail_equation(sampler, ref):
    """Near +-W/2 the erf-based reference cancels; check W/2 - |f(x)| instead, to float32 rounding of x."""
    a = sampler.z_range[1]
    z = np.array([a - 1e-15, a - 1e-12, a - 1e-9, a - 2e-7])
    x = sampler.invert(z).astype(np.float64)
    g = ref.upper_tail(x)
    rel = np.abs(np.log(g) - np.log(a - z))
    # d log G / dx = -f'/G: allow half a float32 spacing of x
    allowed = ref.fprime(x) / g * np.abs(np.spacing(x.astype(np.float32))).astype(np.float64)
    assert np.all(rel <= allowed), (rel, allowed)
    assert np.all((x > 0) & (x < sampler.x_bracket[1]))


def test_bisection_matches_reference_where_float32_resolves(sampler, targets, x_ref, ref):
    """The plain float32 bisection is good to noise / f'(x) + its final bracket, not better."""
    x = sampler.invert(targets, method="bisection").astype(np.float64)
    err = np.abs(x - x_ref)
    fp = ref.fprime(x_ref)
    with np.errstate(divide="ignore"):
        bound = 1e-5 + 2 * sampler.graph_noise / fp
    assert np.all(err <= bound)
    well = sampler.graph_noise / fp < 1e-6
    assert well.mean() > 0.5 and err[well].max() <= 1e-5


def test_round_trip(sampler, ref):
    z = sampler.draw_z(np.random.default_rng(3), 5000)
    x = sampler.invert(z).astype(np.float64)
    # the float32 solve leaves f(x) within the graph's noise of z, and x's float32 rounding adds
    # f' times half a spacing
    slack = sampler.graph_noise + ref.fprime(x) * np.abs(np.spacing(x.astype(np.float32))) * 0.5
    assert np.all(np.abs(ref.f(x) - z) <= slack)
    zg, _, _ = sampler.forward(x)
    assert np.max(np.abs(zg - z)) <= 2e-6


def test_samples_match_pytorch_bisection(sampler, bundled):
    """sample() against a PyTorch float64 bisection of the same z (same bracket, 80 steps), and the
    plain bisection against the homework's float32 bisection of the same z."""
    torch = pytest.importorskip("torch")
    from aeflow.export.reference import load_flow

    flow, _ = load_flow(bundled / "flow.pt")
    n, seed = 4000, 11
    x = sampler.sample(n, seed=seed)
    z = sampler.draw_z(np.random.default_rng(seed), n)
    lo, hi = sampler.x_bracket

    def torch_bisect(model, zt, steps):
        x_low, x_high = torch.full_like(zt, lo), torch.full_like(zt, hi)
        with torch.inference_mode():
            for _ in range(steps):
                m = (x_low + x_high) / 2
                f = model(m)[0]
                x_high = torch.where(f >= zt, m, x_high)
                x_low = torch.where(f >= zt, x_low, m)
        return ((x_low + x_high) / 2).numpy()

    x64 = torch_bisect(flow.double(), torch.from_numpy(z), 80)
    flow.float()
    assert np.max(np.abs(x.astype(np.float64) - x64)) <= 1e-5

    z32 = z.astype(np.float32)
    steps = sampler.default_iterations("bisection")
    x32 = torch_bisect(flow, torch.from_numpy(z32), steps)
    xb = sampler.invert(z32, method="bisection")
    fp = Reference64(sampler.metadata.to_json()).fprime(x64)
    well = sampler.graph_noise / fp < 1e-6
    assert np.max(np.abs(xb[well] - x32[well])) <= 1e-5
    # elsewhere both are float32 solves: they agree to the graphs' noise over f'
    assert np.all(np.abs(xb - x32) <= 1e-5 + 4 * sampler.graph_noise / fp)


def test_truncated_normal_and_distribution(sampler, ref):
    rng = np.random.default_rng(0)
    z = sampler.draw_z(rng, 200_000)
    a = sampler.z_range[1]
    assert np.all(np.abs(z) < a)
    # the truncated normal's second moment: 1 - 2 a phi(a) / (2 Phi(a) - 1)
    m2 = 1 - 2 * a * math.exp(-a * a / 2) / math.sqrt(2 * math.pi) / math.erf(a / math.sqrt(2))
    assert abs(np.mean(z * z) - m2) < 4 * math.sqrt(2 / z.size)
    n = 20_000
    x = np.sort(sampler.sample(n, seed=1).astype(np.float64))
    cdf = ref.cdf(x)
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.63 / math.sqrt(n)  # the 1% critical value


def test_invert_rejects_out_of_range(sampler):
    a = sampler.z_range[1]
    with pytest.raises(InputError, match=r"2 of 4 z values lie outside the flow's range \(-3\.40864442, 3\.40864442\)"):
        sampler.invert([0.0, a, -4.0, 1.0])
    with pytest.raises(InputError, match="1 of 2"):
        sampler.invert([float("nan"), 0.0])
    with pytest.raises(InputError):
        sampler.invert(np.array([a], dtype=np.float32))  # float32(W/2) rounds beyond the range


def test_seeds_reproducible(sampler):
    a, b = sampler.sample(3000, seed=5), sampler.sample(3000, seed=5)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, sampler.sample(3000, seed=6))


@pytest.mark.parametrize("method", ["table", "bisection"])
def test_chunking_does_not_change_results(sampler, method):
    small = FlowSampler(device="cpu", chunk_size=777)
    assert np.array_equal(small.sample(5000, seed=2, method=method), sampler.sample(5000, seed=2, method=method))
    chunks = list(small.sample_chunks(5000, seed=2, method=method))
    assert max(c.size for c in chunks) == 777 and sum(c.size for c in chunks) == 5000


def test_bad_arguments(sampler, monkeypatch):
    with pytest.raises(UsageError, match="unknown method"):
        sampler.invert([0.0], method="secant")
    with pytest.raises(UsageError, match="iterations"):
        sampler.invert([0.0], iterations=0)
    with pytest.raises(UsageError, match="iterations"):
        sampler.invert([0.0], iterations=201)
    for n in (0, -1, 2.5, True):
        with pytest.raises(UsageError):
            sampler.sample(n)
    monkeypatch.setattr(sampler_module, "available_memory", lambda: 1 << 20)
    with pytest.raises(InputError, match="GiB of memory available"):
        sampler.sample(10**8)


def test_iterations_for_bisection(sampler):
    z = np.array([-1.0, 0.0, 2.0])
    coarse = sampler.invert(z, method="bisection", iterations=8).astype(np.float64)
    fine = sampler.invert(z, method="bisection").astype(np.float64)
    width = np.diff(sampler.x_bracket)[0]
    assert np.all(np.abs(coarse - fine) <= width / 2**8)
    assert np.any(np.abs(coarse - fine) > 1e-3)


def test_sha256_checked(tmp_path, bundled):
    copy_artifacts(bundled, tmp_path)
    edit_metadata(tmp_path / "flow.json", sha256="0" * 64)
    with pytest.raises(ArtifactError, match="sha256"):
        FlowSampler(tmp_path, device="cpu")
    assert FlowSampler(tmp_path, device="cpu", verify=False).sample(10, seed=0).shape == (10,)


def test_table_lookup_is_searchsorted(sampler):
    table = sampler._table
    z = np.concatenate([sampler.draw_z(np.random.default_rng(9), 20000), table.z, np.nextafter(table.z, 4),
                        np.nextafter(table.z, -4), [-3.4086, 0.0, 3.4086]])
    assert np.array_equal(table.locate(z), np.searchsorted(table.z, z))
