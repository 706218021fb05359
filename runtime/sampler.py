"""Sampling the 1-D flow with ONNX Runtime: x = f^-1(z), z ~ N(0, 1) truncated to f's range (-W/2, W/2), by "graph"
(flow_sampler.onnx, float64 finish in flow.json's ``float64_z_intervals``) or "bisection" (through flow.onnx), both
within flow.json's x_tolerance of the float64 inverse. Same seed, same samples, any chunk size."""

import functools
import math
import os
import threading
from typing import Iterator

import numpy as np

from aeflow.checks import as_floats, available_memory, check_batch, check_count, check_seed, check_threads, shorten
from aeflow.errors import ArtifactError, InputError, UsageError
from aeflow.files import locked
from aeflow.runtime import inversion
from aeflow.runtime.artifacts import artifacts_dir, read_flow
from aeflow.runtime.contract import FLOW_FILE, FLOW_JSON, SAMPLER_FILE
from aeflow.runtime.device import run_graph
from aeflow.runtime.golden import load_graph
from aeflow.runtime.jsoncheck import content_sha256
from aeflow.runtime.pickling import Rebuildable
from aeflow.runtime.providers import provider_of

GRAPHS = {"graph": SAMPLER_FILE, "bisection": FLOW_FILE}  # method -> the graph it runs
METHODS = tuple(GRAPHS)  # the default first
DEFAULT_CHUNK = 1 << 16
# onnxruntime's CPU kernels round a point by its place in the batch (SIMD lanes): each point goes to
# a place congruent to its target's position modulo SLOTS, so no value depends on the chunk size
SLOTS = 64
BYTES_PER_TARGET = 256  # a chunk's working memory per target, to bound chunk_size by the memory it needs
NOISE_GRID = 2049  # points per component where the graph's float32 noise is measured


def run_placed(session, name: str, values: np.ndarray, start: int = 0) -> list[np.ndarray]:
    """``session``'s outputs for its input ``name`` = ``values`` float32 [M], the targets at
    positions start..start+M-1, each placed at a batch position congruent to its own modulo SLOTS."""
    lead, n = start % SLOTS, values.size
    batch = np.zeros(lead + n + (-(lead + n) % SLOTS), dtype=np.float32)
    batch[lead:lead + n] = values
    return [o[lead:lead + n] for o in run_graph(session, name, batch)]


def _check_method(method, default: str) -> str:
    """``method`` if it is one of ``METHODS``, ``default`` for None, else ``UsageError``."""
    if method is not None and (not isinstance(method, str) or method not in METHODS):
        raise UsageError(f"unknown method {shorten(repr(method))}; choose one of {', '.join(METHODS)}")
    return default if method is None else method


class FlowSampler(Rebuildable):
    """flow.onnx (and flow_sampler.onnx, loaded on first use of "graph") inverted to sample the flow: ``artifacts``
    None for the bundled folder, ``chunk_size`` targets per graph call, ``z_range`` (-W/2, W/2), ``truncation_mass``
    P(|Z| < W/2), ``metadata`` flow.json. Picklable like ``AnomalyScorer``; threads may share one.

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
        threads = check_threads(threads)
        self.chunk_size = check_batch(chunk_size, "chunk_size", BYTES_PER_TARGET, "targets")
        self.directory = artifacts_dir(artifacts)
        self._device, self._threads, self._verify, self._golden = device, threads, verify, golden
        self._sampler, self._lock = None, threading.Lock()
        with locked(self.directory, shared=True):  # one state of the folder, not half of an export
            self.metadata = meta = read_flow(self.directory, verify)
            self._session = load_graph(self.directory, meta, "flow", device, threads, verify=verify, golden=golden)
            self._pin_origin()
        self.provider = provider_of(self._session)
        self._comp = c = meta.components
        self.z_range, self.x_bracket = (-c.half_w, c.half_w), meta.x_bracket
        self.truncation_mass = math.erf(c.half_w / math.sqrt(2.0))

    def settings(self) -> dict:
        """What a pickle holds: the constructor's arguments (``artifacts`` absolute or None) and flow.json's sha256."""
        return {"artifacts": self._portable, "device": self._device, "method": self.method,
                "chunk_size": self.chunk_size, "verify": self._verify, "threads": self._threads,
                "golden": self._golden, "digest": self._digest}

    @functools.cached_property
    def graph_noise(self) -> float:
        """Twice flow.onnx's largest |z| error against float64 f over +-8 sigma around each component, measured
        on first use (a race measures the same twice): "bisection" trusts x to noise / f'."""
        c = self._comp
        x = np.clip(np.linspace(c.mu - 8 * c.sigma, c.mu + 8 * c.sigma, NOISE_GRID).T.ravel(), *self.x_bracket
                    ).astype(np.float32).astype(np.float64)
        return 2.0 * float(np.max(np.abs(self._evaluate(x) - c.z(x))))

    def _sampler_graph(self):
        """The session of flow_sampler.onnx, loaded (and checked) once, on first use of "graph", where the folder
        still holds the flow.json this sampler read (``ArtifactError`` after another export)."""
        if self._sampler is not None:  # every chunk asks: no lock once loaded
            return self._sampler
        with self._lock, locked(self.directory, shared=True):
            if self._sampler is None:
                if content_sha256(read_flow(self.directory, verify=False).to_json()) != self._digest:
                    raise ArtifactError(f"{self.directory / FLOW_JSON}: changed since this FlowSampler was created "
                                        f"(exported again?); load it again (a new FlowSampler, or the command run "
                                        f"again)")
                self._sampler = load_graph(self.directory, self.metadata, "sampler", self._device, self._threads,
                                           verify=self._verify, golden=self._golden)
        return self._sampler

    def _evaluate(self, x: np.ndarray, start: int = 0) -> np.ndarray:
        """flow.onnx's z (float64 [M]) at x float64 [M] taken as float32, for targets at start.."""
        return run_placed(self._session, "x", x.astype(np.float32), start)[0].astype(np.float64)

    def forward(self, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The flow at x (array-like [N] of real numbers, cast to float32; complex input is an
        ``InputError``): (z, dz_dx, log_prob), float32 [N] each, computed by flow.onnx in chunks."""
        x = as_floats(x, np.float32, "x")
        parts = [run_placed(self._session, "x", x[i:i + self.chunk_size], i) for i in range(0, x.size, self.chunk_size)]
        return tuple(np.concatenate([p[k] for p in parts] or [np.empty(0, np.float32)]) for k in range(3))

    def _invert_chunk(self, z: np.ndarray, start: int, method: str) -> np.ndarray:
        """x float64 for targets z float64 [M] that sit at positions start..start+M-1."""
        if method == "bisection":
            return inversion.invert_by_bisection(lambda x: self._evaluate(x, start), self._comp, z, self.x_bracket,
                                                 self.graph_noise, self.metadata.sampler.check["x_tolerance"])
        x = run_placed(self._sampler_graph(), "z", z.astype(np.float32), start)[0].astype(np.float64)
        unsure = ~np.isfinite(x) | inversion.in_intervals(z, self.metadata.sampler.float64_z_intervals)
        if unsure.any():
            x[unsure] = inversion.polish64(self._comp, z[unsure], x[unsure], *self.x_bracket)
        return x

    def invert(self, z, method: str | None = None) -> np.ndarray:
        """x float32 [N] with f(x) = z within x_tolerance of the float64 inverse, for z array-like [N] of real
        numbers (float64) strictly inside ``z_range`` (else ``InputError``); ``method``: None, the default."""
        method, z = _check_method(method, self.method), as_floats(z, np.float64, "z")
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
        """Yield ``n`` samples as float32 chunks of at most ``chunk_size`` (the same values for the same seed
        whatever the chunk size); memory stays O(chunk_size)."""
        n, method = check_count(n), _check_method(method, self.method)
        rng = np.random.default_rng(check_seed(seed))
        for i in range(0, n, self.chunk_size):
            yield self._invert_chunk(self.draw_z(rng, min(self.chunk_size, n - i)), i, method).astype(np.float32)

    def sample(self, n: int, seed: int | None = None, method: str | None = None) -> np.ndarray:
        """``n`` samples (float32 [n]) of the flow's density normalised over the range; ``seed``: an
        int for reproducible draws, or None; an output larger than the memory available is an ``InputError``."""
        n, _, avail = check_count(n), check_seed(seed), available_memory()
        if avail is not None and 4 * n > avail:
            raise InputError(f"{n:,} samples need {4 * n / 2**30:.1f} GiB for the float32 output, more than the "
                             f"{avail / 2**30:.1f} GiB of memory available; ask for fewer, or stream them to a "
                             f".npy file with 'aeflow sample --output'")
        out = np.empty(n, dtype=np.float32)
        for i, chunk in zip(range(0, n, self.chunk_size), self.sample_chunks(n, seed, method)):
            out[i:i + chunk.size] = chunk
        return out

    def density(self, x) -> np.ndarray:
        """The density the samples follow at x array-like [N]: exp(log_prob) / truncation_mass, float64 [N]."""
        return np.exp(self.forward(x)[2].astype(np.float64)) / self.truncation_mass
