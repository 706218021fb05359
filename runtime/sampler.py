"""Sampling the 1-D flow with ONNX Runtime: x = f^-1(z), z ~ N(0, 1) truncated to (-W/2, W/2).

numpy + onnxruntime only. f maps R onto (-W/2, W/2), so a z outside that range has no preimage
(the homework clamped such z to its bracket's edge). z is drawn from N(0, 1) truncated to the range
by rejection, so samples follow the model's density normalised over the range exactly. Two methods,
both within 1e-5 of the float64 inverse: "graph" (default) runs flow_sampler.onnx
(``aeflow.export.sampler_graph``) and finishes in float64 (``inversion.polish64``) the targets in
flow.json's ``float64_z_intervals`` (f' < 0.1: about 0.5% of them); "bisection" bisects every
target at once through flow.onnx, with the float64 finish where float32 cannot resolve x
(``inversion.invert_by_bisection``). Same seed, same samples, whatever the chunk size.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Callable, Iterator

import numpy as np

from aeflow.checks import available_memory, check_batch, check_count, check_seed, check_threads
from aeflow.errors import InputError, UsageError
from aeflow.runtime import inversion
from aeflow.runtime.contract import FLOW_FILE, SAMPLER_FILE, artifacts_dir, read_flow
from aeflow.runtime.device import run_graph
from aeflow.runtime.golden import load_graph
from aeflow.runtime.pickling import Rebuildable, metadata_digest, portable_artifacts
from aeflow.runtime.providers import provider_of

GRAPHS = {"graph": SAMPLER_FILE, "bisection": FLOW_FILE}  # method -> the graph it runs
METHODS = tuple(GRAPHS)  # the default first
DEFAULT_CHUNK = 1 << 16
# onnxruntime's CPU kernels round a point differently depending on its place in the batch (SIMD
# lanes, remainders): each point goes to a place congruent to its target's position modulo SLOTS,
# so a sample's value does not depend on the chunk size
SLOTS = 64
BYTES_PER_TARGET = 256  # a chunk's working memory per target, to bound chunk_size by the memory it needs
NOISE_GRID = 2049  # points per component where the graph's float32 noise is measured


def run_placed(session, name: str, values: np.ndarray, start: int = 0) -> list[np.ndarray]:
    """``session``'s outputs for its float32 [M] input ``name`` = ``values``, the points being the
    targets at positions start..start+M-1: each placed at a batch position congruent to its own
    modulo SLOTS (the batch shifted and zero-padded to whole SLOTS)."""
    lead, n = start % SLOTS, values.size
    batch = np.zeros(lead + n + (-(lead + n) % SLOTS), dtype=np.float32)
    batch[lead:lead + n] = values
    return [o[lead:lead + n] for o in run_graph(session, name, batch)]


def _as_floats(values, dtype, name: str) -> np.ndarray:
    """``values`` (array-like) as a flat array of ``dtype``, or ``InputError`` for what is not
    real numbers (complex, strings, objects, ints beyond float range, ragged lists)."""
    try:
        array = np.asarray(values)
        if array.dtype.kind == "c":
            raise InputError(f"{name}: complex values (dtype {array.dtype}); pass real numbers")
        return array.astype(dtype).ravel()
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"{name}: not an array of numbers ({' '.join(str(e).split())[:80]})") from None


class FlowSampler(Rebuildable):
    """flow.onnx (and flow_sampler.onnx) on onnxruntime sessions, inverted to sample the flow.

    Arguments:
        artifacts: Folder with flow.json, flow.onnx, flow_sampler.onnx (None: the bundled one).
        device: "auto", "cpu" or "cuda".
        method: The default method, one of ``METHODS`` (None: "graph").
        chunk_size: Targets per graph call: memory stays O(chunk_size) besides the float32 output.
        verify: Check the graphs' sha256 and flow.json's contents against what export recorded.
        threads: onnxruntime's intra-op threads (None: its choice).
        golden: Compare each graph's outputs on this machine with golden.npz when it loads
            (flow.onnx now, flow_sampler.onnx on first use of "graph"; a few ms).

    Attributes: ``directory`` (the artifacts folder, Path), ``method`` and ``methods`` (the default
    first), ``z_range`` = (-W/2, W/2) (the open range of z that has a preimage), ``x_bracket``
    (flow.json's, holding every preimage), ``truncation_mass`` = P(|Z| < W/2) (what the samples'
    density is normalised by), ``chunk_size``.

    Picklable like ``AnomalyScorer``: a pickle holds ``settings()``, the receiver rebuilds the
    sessions on first use and refuses a flow.json that differs from the sender's. One sampler may
    be shared by any number of threads: calls keep no state on it, the parts built on first use are
    built once under a lock, and concurrent calls give bit for bit the results of serial ones.

    Example:
        >>> sampler = FlowSampler(device="cpu")
        >>> x = sampler.sample(1000, seed=0)  # float32 [1000]
        >>> z, dz_dx, log_prob = sampler.forward(x)  # float32 [1000] each
        >>> bool(np.allclose(sampler.invert(z), x, atol=1e-5))
        True
    """

    METADATA = "flow.json"

    def __init__(self, artifacts: str | os.PathLike | None = None, device: str = "auto", method: str | None = None,
                 chunk_size: int = DEFAULT_CHUNK, verify: bool = True, threads: int | None = None,
                 golden: bool = True):
        self.method = _check_method(method, METHODS[0])
        self.methods = tuple(sorted(METHODS, key=lambda m: m != self.method))
        check_threads(threads)
        self.chunk_size = check_batch(chunk_size, "chunk_size", BYTES_PER_TARGET, "targets")
        self.directory = artifacts_dir(artifacts)
        self._meta = meta = read_flow(self.directory, verify)
        self._comp = c = inversion.Components(**{k: meta["components"][k] for k in ("mu", "sigma", "weight")})
        self.z_range, self.x_bracket = (-c.half_w, c.half_w), (float(meta["x_bracket"][0]), float(meta["x_bracket"][1]))
        self.truncation_mass = math.erf(c.half_w / math.sqrt(2.0))
        self._session = load_graph(self.directory, meta, "flow", device, threads, verify=verify, golden=golden)
        self._device, self._threads, self._verify, self._golden = device, threads, verify, golden
        self._lazy_lock = threading.RLock()  # cached_property has no lock from Python 3.12 on
        # where a pickle points: fixed now, as a relative path depends on the current folder
        self._portable, self._digest = portable_artifacts(self.directory), metadata_digest(self.directory, self.METADATA)

    def settings(self) -> dict:
        """What a pickle of this sampler holds: the constructor's arguments (``artifacts`` an
        absolute path, or None for the bundled folder) and ``digest`` (flow.json's sha256)."""
        return {"artifacts": self._portable, "device": self._device, "method": self.method,
                "chunk_size": self.chunk_size, "verify": self._verify, "threads": self._threads,
                "golden": self._golden, "digest": self._digest}

    @classmethod
    def _rebuild(cls, settings: dict) -> "FlowSampler":
        return cls(settings["artifacts"], settings["device"], settings["method"], settings["chunk_size"],
                   settings["verify"], settings["threads"], settings["golden"])

    @property
    def provider(self) -> str:
        """The execution provider that really runs flow.onnx, e.g. ``CPUExecutionProvider``."""
        return provider_of(self._session)

    @property
    def metadata(self) -> dict:
        """flow.json as recorded (a copy)."""
        return dict(self._meta)

    @property
    def graph_noise(self) -> float:
        """Twice the largest |z| error of flow.onnx's float32 f against float64 f, measured on first
        use over a grid of +-8 sigma around each component; "bisection" trusts x to noise / f'."""
        return self._once("_graph_noise", self._measure_noise)

    def _once(self, attr: str, build: Callable[[], object]):
        """``build()``'s value, computed once per sampler even when threads ask at the same time."""
        value = self.__dict__.get(attr)
        if value is None:
            with self._lazy_lock:
                value = self.__dict__.get(attr)
                if value is None:
                    value = build()
                    self.__dict__[attr] = value
        return value

    def _measure_noise(self) -> float:
        c = self._comp
        x = np.clip(np.linspace(c.mu - 8 * c.sigma, c.mu + 8 * c.sigma, NOISE_GRID).T.ravel(), *self.x_bracket
                    ).astype(np.float32).astype(np.float64)
        return 2.0 * float(np.max(np.abs(self._evaluate(x) - c.z(x))))

    def _sampler_graph(self):
        """The session of flow_sampler.onnx, loaded (and checked) on first use of "graph"."""
        return self._once("_sampler_session", lambda: load_graph(
            self.directory, self._meta, "sampler", self._device, self._threads, verify=self._verify,
            golden=self._golden))

    def _evaluate(self, x: np.ndarray, start: int = 0) -> np.ndarray:
        """flow.onnx's z (float64 [M]) at x float64 [M] taken as float32, for targets at start.."""
        return run_placed(self._session, "x", x.astype(np.float32), start)[0].astype(np.float64)

    def forward(self, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The flow at x (array-like [N] of real numbers, cast to float32; complex input is an
        ``InputError``): (z, dz_dx, log_prob), float32 [N] each, computed by flow.onnx in chunks."""
        x = _as_floats(x, np.float32, "x")
        outs = [np.empty(x.size, dtype=np.float32) for _ in range(3)]
        for i in range(0, x.size, self.chunk_size):
            for o, r in zip(outs, run_placed(self._session, "x", x[i:i + self.chunk_size], i)):
                o[i:i + r.size] = r
        return outs[0], outs[1], outs[2]

    def _invert_chunk(self, z: np.ndarray, start: int, method: str) -> np.ndarray:
        """x float64 for targets z float64 [M] that sit at positions start..start+M-1."""
        if method == "bisection":
            return inversion.invert_by_bisection(lambda x: self._evaluate(x, start), self._comp, z, self.x_bracket,
                                                 self.graph_noise)
        x = run_placed(self._sampler_graph(), "z", z.astype(np.float32), start)[0].astype(np.float64)
        unsure = ~np.isfinite(x)
        for a, b in self._meta["sampler_graph"]["float64_z_intervals"]:
            unsure |= (z >= a) & (z <= b)
        if unsure.any():
            x[unsure] = inversion.polish64(self._comp, z[unsure], x[unsure], *self.x_bracket)
        return x

    def invert(self, z, method: str | None = None) -> np.ndarray:
        """x with f(x) = z, within 1e-5 of the float64 inverse.

        Arguments:
            z: The targets, array-like [N] of real numbers (taken as float64), each strictly inside
                ``z_range`` (else ``InputError`` naming how many are not; complex: ``InputError``).
            method: One of ``METHODS`` (None: the sampler's default).

        Returns:
            x, float32 [N].
        """
        method = _check_method(method, self.method)
        z = _as_floats(z, np.float64, "z")
        bad = ~(np.abs(z) < self.z_range[1])  # NaN included
        if bad.any():
            raise InputError(f"{int(bad.sum())} of {z.size} z value{'s' if z.size != 1 else ''} lie outside the "
                             f"flow's range ({-self.z_range[1]:.9g}, {self.z_range[1]:.9g}) (or are not finite) "
                             f"and have no preimage; pass z strictly inside the range")
        out = np.empty(z.size, dtype=np.float32)
        for i in range(0, z.size, self.chunk_size):
            out[i:i + self.chunk_size] = self._invert_chunk(z[i:i + self.chunk_size], i, method)
        return out

    def draw_z(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """The next ``n`` standard normal draws from ``rng`` with |z| < W/2 (float64 [n]), skipping
        the rest: exactly N(0, 1) truncated to the range, and the same stream however it is split."""
        out, filled = np.empty(n, dtype=np.float64), 0
        while filled < n:
            z = rng.standard_normal(n - filled)
            z = z[np.abs(z) < self._comp.half_w]
            out[filled:filled + z.size], filled = z, filled + z.size
        return out

    def sample_chunks(self, n: int, seed: int | None = None, method: str | None = None) -> Iterator[np.ndarray]:
        """Yield ``n`` samples as float32 chunks of at most ``chunk_size`` (the same values for the
        same seed whatever the chunk size). Memory stays O(chunk_size)."""
        n = check_count(n)
        method = _check_method(method, self.method)
        rng = np.random.default_rng(check_seed(seed))
        for i in range(0, n, self.chunk_size):
            z = self.draw_z(rng, min(self.chunk_size, n - i))
            yield self._invert_chunk(z, i, method).astype(np.float32)

    def sample(self, n: int, seed: int | None = None, method: str | None = None) -> np.ndarray:
        """``n`` samples of the flow's density (normalised over the range).

        Arguments:
            n: How many (a positive int); an output larger than the memory available is an ``InputError``.
            seed: An int for reproducible draws (numpy Generator), or None.
            method: One of ``METHODS`` (None: the sampler's default).

        Returns:
            x, float32 [n].
        """
        n, _ = check_count(n), check_seed(seed)
        need, avail = n * np.dtype(np.float32).itemsize, available_memory()
        if avail is not None and need > avail:
            raise InputError(f"{n:,} samples need {need / 2**30:.1f} GiB for the float32 output, more than the "
                             f"{avail / 2**30:.1f} GiB of memory available; ask for fewer, or stream them to a "
                             f".npy file with 'aeflow sample --output'")
        try:
            out = np.empty(n, dtype=np.float32)
        except (MemoryError, ValueError):
            raise InputError(f"cannot allocate {n:,} float32 samples; ask for fewer") from None
        for i, chunk in zip(range(0, n, self.chunk_size), self.sample_chunks(n, seed, method)):
            out[i:i + chunk.size] = chunk
        return out

    def density(self, x) -> np.ndarray:
        """The density the samples follow at x array-like [N]: exp(log_prob) / truncation_mass, float64 [N]."""
        return np.exp(self.forward(x)[2].astype(np.float64)) / self.truncation_mass


def _check_method(method, default: str) -> str:
    """``method`` if it is one of ``METHODS``, ``default`` for None, else ``UsageError``."""
    if method is None:
        return default
    if not isinstance(method, str) or method not in METHODS:
        raise UsageError(f"unknown method {str(method)[:40]!r}; choose one of {', '.join(METHODS)}")
    return method
