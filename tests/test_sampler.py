"""FlowSampler: flow.onnx against PyTorch, both inversion methods against a float64 reference and
the homework's 30-step clamped bisection, the truncated normal, errors, seeds and chunking."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

from conftest import copy_artifacts, edit_metadata

from aeflow.errors import ArtifactError, InputError, UsageError
from aeflow.parity import compare
from aeflow.runtime import sampler as sampler_module
from aeflow.runtime.sampler import METHODS, FlowSampler

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


def hard_targets(a: float) -> np.ndarray:
    """Both edges of the range (-a, a), zero, the bulk's ends and the slope valley near z = 0.49."""
    return np.array([a - 1e-15, a - 1e-12, a - 1e-9, a - 2e-7, a - 1e-6, a - 1e-4, a - 1e-3, 3.3, 3.0, 0.48, 0.485,
                     0.49, 0.0, -3.0, -3.3, -a + 1e-4, -a + 1e-6, -a + 1e-9, -a + 1e-12, -a + 1e-15])


@pytest.fixture(scope="module")
def targets(sampler) -> np.ndarray:
    """6000 draws of the truncated normal plus the hard cases."""
    return np.concatenate([sampler.draw_z(np.random.default_rng(7), 6000), hard_targets(sampler.z_range[1])])


@pytest.fixture(scope="module")
def x_ref(ref, targets) -> np.ndarray:
    return ref.invert(targets)


def test_properties(sampler):
    meta = sampler.metadata.to_json()
    assert sampler.provider == "CPUExecutionProvider"
    assert sampler.z_range == pytest.approx((-meta["W"] / 2, meta["W"] / 2), rel=1e-12)
    assert sampler.methods == METHODS == ("graph", "bisection") and sampler.method == "graph"
    assert FlowSampler(device="cpu", method="bisection").methods == ("bisection", "graph")


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
    assert np.all(np.abs(dz.astype(np.float64) - tdz) <= 1e-5 * np.abs(tdz.astype(np.float64)))  # 1e-5 rel
    assert compare("dz_dx", dz, tdz).passed
    assert compare("log_prob", lp, tlp).passed


def test_dz_dx_takes_log_probs_tolerance_on_its_log(bundled):
    """dz_dx comes from its float32 log, which errs by a few |ln dz_dx| x 6e-8: a flow fitted to integers 0..254
    gave dz_dx 2.3e-5 (relative) from PyTorch at a far golden point (dz_dx 4e-22), past the flat 1e-5, and export
    failed. Float32 against float64 passes out to dz_dx 1e-37; an error of 1e-4 in the bulk still fails."""
    torch = pytest.importorskip("torch")
    from aeflow.export.reference import load_flow, torch_flow
    from aeflow.runtime.inversion import Components
    from aeflow.train.models import Flow1d

    far = np.array([4e-22, 3e-17, 1e-30])
    assert compare("dz_dx", far * (1 + 2.3e-5), far).passed
    assert not compare("dz_dx", far * (1 + 1e-3), far).passed
    flow = Flow1d(5)  # the components of that flow (FlowModel() on 4,000 integers 0..254)
    with torch.no_grad():
        flow.mus.copy_(torch.tensor([-2.88381, 11.0713, 110.166, 252.038, 255.954]))
        flow.log_sigmas.copy_(torch.tensor([10.0813, 88.4364, 137.253, 39.0398, 5.5721]).log())
        flow.weight_logits.copy_(torch.tensor([2.55668, 1.94779, 2.25999, 2.17906, 2.16012]).log())
    x = np.linspace(-1500, 1500, 30_001).astype(np.float32)
    exact = Components(**flow.components()).dz_dx(x.astype(np.float64))
    keep = exact > 1e-37  # float32's normal range
    assert compare("dz_dx", torch_flow(flow, x)[1][keep], exact[keep]).passed
    bundled_flow, _ = load_flow(bundled / "flow.pt")
    bulk = np.linspace(-3, 3, 601).astype(np.float32)
    dz = torch_flow(bundled_flow, bulk)[1]
    assert compare("dz_dx", dz, dz).passed and not compare("dz_dx", dz * np.float32(1 + 1e-4), dz).passed


@pytest.mark.parametrize("method", METHODS)
def test_methods_within_1e5_of_float64(sampler, targets, x_ref, method):
    x = sampler.invert(targets, method=method)
    assert x.dtype == np.float32 and x.shape == targets.shape
    err = np.abs(x.astype(np.float64) - x_ref)
    assert err.max() <= 1e-5, (err.max(), targets[err.argmax()])


@pytest.mark.parametrize("method", METHODS)
def test_edge_targets_solve_the_tail_equation(sampler, ref, method):
    """Near +-W/2 the erf-based reference cancels; check W/2 - |f(x)| instead, to float32 rounding of x."""
    a = sampler.z_range[1]
    z = np.array([a - 1e-15, a - 1e-12, a - 1e-9, a - 2e-7])
    x = sampler.invert(z, method=method).astype(np.float64)
    g = ref.upper_tail(x)
    rel = np.abs(np.log(g) - np.log(a - z))
    # d log G / dx = -f'/G: allow half a float32 spacing of x
    allowed = ref.fprime(x) / g * np.abs(np.spacing(x.astype(np.float32))).astype(np.float64)
    assert np.all(rel <= allowed), (rel, allowed)
    assert np.all((x > 0) & (x < sampler.x_bracket[1]))


def test_round_trip(sampler, ref):
    z = sampler.draw_z(np.random.default_rng(3), 5000)
    x = sampler.invert(z).astype(np.float64)
    # x is within 1e-5 of the exact inverse: f(x) within f' * 1e-5 of z (and flow.onnx's noise)
    assert np.all(np.abs(ref.f(x) - z) <= ref.fprime(x) * 1e-5 + 1e-12)
    zg, _, _ = sampler.forward(x)
    assert np.max(np.abs(zg - z)) <= 2e-6


def homework_bisection(flow, z):
    """The homework's sampler on given z: 30 bisection steps on [-3, 3] in float32, z beyond f's
    range there clamped to the bracket's edges."""
    import torch

    zt = torch.from_numpy(z.astype(np.float32))
    x_low, x_high = torch.full_like(zt, -3.0), torch.full_like(zt, 3.0)
    with torch.no_grad():
        for _ in range(30):
            m = (x_low + x_high) / 2
            f = flow(m)[0]
            x_high[f >= zt] = m[f >= zt]
            x_low[f < zt] = m[f < zt]
    return ((x_low + x_high) / 2).numpy().astype(np.float64)


@pytest.mark.parametrize("method", METHODS)
def test_samples_match_the_homework_and_pytorch_float64(sampler, bundled, ref, method):
    """sample() against the homework's 30-step clamped bisection of the same z where its root lies
    inside [-3, 3] and float32 resolves it, and against a PyTorch float64 bisection (80 steps,
    flow.json's bracket) everywhere."""
    torch = pytest.importorskip("torch")
    from aeflow.export.reference import load_flow

    flow, _ = load_flow(bundled / "flow.pt")
    n, seed = 4000, 11
    x = sampler.sample(n, seed=seed, method=method).astype(np.float64)
    z = sampler.draw_z(np.random.default_rng(seed), n)
    lo, hi = sampler.x_bracket
    x_low, x_high, z64 = torch.full((n,), lo, dtype=torch.float64), torch.full((n,), hi, dtype=torch.float64), \
        torch.from_numpy(z)
    with torch.inference_mode():
        flow64 = flow.double()
        for _ in range(80):
            m = (x_low + x_high) / 2
            above = flow64(m)[0] >= z64
            x_high, x_low = torch.where(above, m, x_high), torch.where(above, x_low, m)
        flow.float()
    assert np.max(np.abs(x - ((x_low + x_high) / 2).numpy())) <= 1e-5
    homework = homework_bisection(flow, z)
    resolved = (np.abs(x) < 2.9) & (sampler.graph_noise / ref.fprime(x) < 2e-6)
    assert resolved.mean() > 0.75 and np.max(np.abs(x - homework)[resolved]) <= 1e-5
    assert np.all(np.abs(homework[np.abs(x) > 3.01]) > 2.99)  # the homework clamps those to its bracket


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


@pytest.mark.parametrize("call", ["forward", "invert", "density"])
@pytest.mark.parametrize("values", [np.array([0.5 + 0.25j, 1.0]), np.array([0.5 + 0j], dtype=np.complex64),
                                    [0.5, 1j], np.complex128(0.5)], ids=["complex128", "complex64", "list", "scalar"])
def test_complex_input_refused(sampler, call, values):
    """Complex input is refused with one line, never cast to its real part (numpy's ComplexWarning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=r"^(x|z): complex values \(dtype complex(64|128)\); pass real numbers$"):
            getattr(sampler, call)(values)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_samples_whatever_the_chunk_size(sampler, method):
    a = sampler.sample(5000, seed=2, method=method)
    assert np.array_equal(a, sampler.sample(5000, seed=2, method=method))
    assert not np.array_equal(a, sampler.sample(5000, seed=3, method=method))
    for chunk_size in (777, 4096):
        small = FlowSampler(device="cpu", chunk_size=chunk_size)
        assert np.array_equal(small.sample(5000, seed=2, method=method), a)
        chunks = list(small.sample_chunks(5000, seed=2, method=method))
        assert max(c.size for c in chunks) == chunk_size and np.array_equal(np.concatenate(chunks), a)
    z = sampler.draw_z(np.random.default_rng(2), 5000)
    assert np.array_equal(FlowSampler(device="cpu", chunk_size=999).invert(z, method=method), a)


def test_bad_arguments(sampler, monkeypatch):
    for method in ("secant", "table", "newton", 3, b"graph"):
        with pytest.raises(UsageError, match="unknown method .*; choose one of graph, bisection"):
            sampler.invert([0.0], method=method)
    with pytest.raises(TypeError):
        sampler.sample(10, iterations=5)  # gone with the table and newton methods
    for n in (0, -1, 2.5, True):
        with pytest.raises(UsageError):
            sampler.sample(n)
    monkeypatch.setattr(sampler_module, "available_memory", lambda: 1 << 20)
    with pytest.raises(InputError, match="GiB of memory available"):
        sampler.sample(10**8)


def test_sha256_checked(tmp_path, bundled):
    copy_artifacts(bundled, tmp_path)
    edit_metadata(tmp_path / "flow.json", sha256="0" * 64)
    with pytest.raises(ArtifactError, match="sha256"):
        FlowSampler(tmp_path, device="cpu")
    assert FlowSampler(tmp_path, device="cpu", verify=False).sample(10, seed=0).shape == (10,)


@pytest.mark.parametrize("values, words", [
    (["1.0", "2.0"], "not real numbers"),  # text was parsed as numbers
    (np.zeros((2, 3)), "shape [2, 3]; pass a 1-D array"),  # was flattened silently
    ([1e40], "beyond float32's range"),  # numpy's overflow warning, then inf
    (np.array([True, False]), "not real numbers"),
])
def test_forward_takes_real_numbers_in_one_dimension_as_the_scorer_takes_images(values, words):
    import warnings

    from aeflow.errors import InputError
    from aeflow.runtime import FlowSampler

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=re.escape(words)):
            FlowSampler(device="cpu").forward(values)
