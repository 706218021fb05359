"""Sampling the 1-D flow with ONNX Runtime: x = f^-1(z), z ~ N(0, 1) truncated to (-W/2, W/2).

numpy + onnxruntime only. f maps R onto (-W/2, W/2), so a z outside that range has no preimage.
The homework clamped such z to its bracket's edge (about 0.1% of a million samples piled up at
+-3); here z is drawn from N(0, 1) truncated to the range by rejection (exact: every standard
normal draw with |z| < W/2 is kept, in order, the rest skipped), so samples follow the model's
density normalised over the range, p(x) / P(|Z| < W/2), exactly.

float32 and the range's edges: the graph's f saturates to +-W/2 (rounded to float32, which is a
hair beyond W/2) long before the bracket ends, and its float32 z carries ~4e-7 of rounding, so a
float32 solve cannot tell apart targets within that of +-W/2, and elsewhere resolves x only to
about noise / f'(x). Valid z are those strictly inside (-W/2, W/2) in float64; the float64 polish
(``inversion.polish64``) finds their preimage to 1e-13 however close they are to the edge, and
every method except the plain "bisection" uses it wherever the float32 solve cannot guarantee
4e-6. "bisection" is the homework's algorithm kept for parity: float32 through and through.

"graph" runs the whole float32 solve as one graph, flow_sampler.onnx (``aeflow.export.sampler_graph``:
table start, a fixed number of Newton steps; float32 z in, x out), loaded on first use, and polishes
in float64 the targets inside flow.json's ``float64_z_intervals`` (where f' < 0.1, so the float32 x
could miss 1e-5): about 0.5% of the samples.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from aeflow.checks import available_memory, check_batch, check_seed
from aeflow.errors import InputError, UsageError
from aeflow.runtime import inversion
from aeflow.runtime.artifacts import artifacts_dir, read_flow
from aeflow.runtime.device import run_graph
from aeflow.runtime.golden import load_graph
from aeflow.runtime.pickling import Rebuildable, check_threads, metadata_digest, portable_artifacts
from aeflow.runtime.providers import provider_of

METHODS = ("graph", "table", "newton", "bisection")
# "graph" runs flow_sampler.onnx; asked for iterations but no method, a sampler runs "table"
DEFAULT_METHOD, FALLBACK_METHOD = "graph", "table"
DEFAULT_CHUNK = 1 << 16
MAX_ITERATIONS = 200
# onnxruntime's CPU kernels round a point's z differently depending on its place in the batch
# (SIMD lanes, vector remainders); every point is put at a place congruent to its target's position
# modulo SLOTS, so a sample's value does not depend on the chunk size or on which others share a call
SLOTS = 64


@dataclass(frozen=True)
class SampleStats:
    """Running summary of a stream of samples: n, mean, std (ddof 0), min, max."""

    n: int
    mean: float
    std: float
    min: float
    max: float


class _Running:
    """Chunk-wise mean/variance (Chan's parallel update, float64) plus min and max."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.min, self.max = math.inf, -math.inf

    def add(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        x = x.astype(np.float64)
        n_b, mean_b = x.size, float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n
        self.min, self.max = min(self.min, float(x.min())), max(self.max, float(x.max()))

    def stats(self) -> SampleStats:
        std = math.sqrt(self.m2 / self.n) if self.n else math.nan
        return SampleStats(self.n, self.mean if self.n else math.nan, std,
                           self.min if self.n else math.nan, self.max if self.n else math.nan)


def running_stats() -> _Running:
    """A running summary: ``.add(x)`` per chunk, ``.stats()`` -> SampleStats."""
    return _Running()


MAX_COUNT = 10**12  # 4 TB of float32: more is a typo


def check_count(n) -> int:
    """``n`` as a positive int, or UsageError."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_COUNT:
        raise UsageError(f"the number of samples must be a positive integer up to {MAX_COUNT:.0e}, got {str(n)[:40]}")
    return int(n)


# working memory of one target in a chunk (float64 z and x, int64 positions, float32 graph buffers
# and the solvers' temporaries), to bound chunk_size by the memory it needs
BYTES_PER_TARGET = 256


def run_placed(session, name: str, values: np.ndarray, index: np.ndarray | None = None) -> list[np.ndarray]:
    """``session``'s outputs for its float32 [M] input ``name`` = ``values``, each point placed at
    a batch position congruent to ``index`` (int64 [M]; default 0..M-1) modulo SLOTS."""
    n = values.size
    if index is None:
        index = np.arange(n)
    if n and index[-1] - index[0] == n - 1 and np.all(np.diff(index) == 1):
        lead = int(index[0] % SLOTS)  # a run of positions: shift it, pad the end
        batch = np.zeros(lead + n + (-(lead + n) % SLOTS), dtype=np.float32)
        batch[lead:lead + n] = values
        return [o[lead:lead + n] for o in run_graph(session, name, batch)]
    slot = index % SLOTS
    order = np.argsort(slot, kind="stable")
    counts = np.bincount(slot, minlength=SLOTS)
    rank = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = rank * SLOTS + slot[order]
    batch = np.zeros(int(counts.max(initial=0)) * SLOTS, dtype=np.float32)
    batch[pos] = values
    return [o[pos] for o in run_graph(session, name, batch)]


def _as_floats(values, dtype, name: str) -> np.ndarray:
    """``values`` (array-like) as a flat array of ``dtype``, or ``InputError`` for what is not
    numbers (strings, objects, ints beyond float range, ragged lists)."""
    try:
        return np.asarray(values, dtype=dtype).ravel()
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"{name}: not an array of numbers ({' '.join(str(e).split())[:80]})") from None


class FlowSampler(Rebuildable):
    """flow.onnx on an onnxruntime session, inverted to sample the flow.

    ``artifacts``: folder with flow.json + flow.onnx (default: the bundled one); ``device``: auto,
    cpu or cuda; ``method``: default inversion method (one of ``METHODS``; None: the fastest exact,
    "table"); ``chunk_size``: targets per graph call (memory stays O(chunk_size) besides the
    float32 output); ``verify``: check the graphs' sha256 and flow.json's contents against what
    export recorded; ``golden``: compare each graph's outputs on this machine with the golden
    outputs recorded at export when it loads (flow.onnx now, flow_sampler.onnx on first use of
    "graph"; a few ms); ``threads``: intra-op threads (None: onnxruntime's choice)..

    Picklable like ``AnomalyScorer``: a pickle holds ``settings()``, the receiver rebuilds the
    sessions on first use and refuses a flow.json that differs from the sender's.

    Thread safety: one sampler may be shared by any number of threads. Calls keep no state on the
    sampler (each ``sample`` has its own random Generator), the parts built on first use (the
    inverse table, the sampler graph's session, the graph noise) are built once under a lock, and
    onnxruntime's ``InferenceSession.run`` is thread-safe; concurrent calls give bit for bit the
    results of the same calls made one after another."""

    METADATA = "flow.json"

    def __init__(self, artifacts: str | os.PathLike | None = None, device: str = "auto", method: str | None = None,
                 chunk_size: int = DEFAULT_CHUNK, verify: bool = True, threads: int | None = None,
                 golden: bool = True):
        self._method = self._check_method(method)
        check_threads(threads)
        self.chunk_size = check_batch(chunk_size, "chunk_size", BYTES_PER_TARGET, "targets")
        directory = artifacts_dir(artifacts)
        self._meta = read_flow(directory, verify)
        self._comp = self._meta.components
        self._bracket = self._meta.x_bracket
        self._session = load_graph(directory, self._meta, "flow", device, threads, verify=verify, golden=golden)
        self._directory, self._device, self._threads = directory, device, threads
        self._verify, self._golden = verify, golden
        self._lazy_lock = threading.RLock()  # cached_property has no lock from Python 3.12 on
        # where a pickle points: fixed now, as a relative path depends on the current folder
        self._portable, self._digest = portable_artifacts(directory), metadata_digest(directory, self.METADATA)

    # -- pickling ---------------------------------------------------------------------------

    def settings(self) -> dict:
        """What a pickle of this sampler holds: the constructor's arguments (``artifacts`` an
        absolute path, or None for the bundled folder; ``method`` the default in force) and
        ``digest`` (flow.json's sha256)."""
        return {"artifacts": self._portable, "device": self._device, "method": self._method,
                "chunk_size": self.chunk_size, "verify": self._verify, "threads": self._threads,
                "golden": self._golden,
                "digest": self._digest}

    @classmethod
    def _rebuild(cls, settings: dict) -> "FlowSampler":
        return cls(settings["artifacts"], settings["device"], settings["method"], settings["chunk_size"],
                   settings["verify"], settings["threads"], settings["golden"])

    # -- properties -------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The artifacts folder the sampler loaded."""
        return self._directory

    @property
    def provider(self) -> str:
        """The execution provider that really runs flow.onnx, e.g. ``CPUExecutionProvider``."""
        return provider_of(self._session)

    @property
    def metadata(self):
        """flow.json as recorded (typed, frozen: ``aeflow.runtime.contract.FlowMeta``)."""
        return self._meta

    @property
    def z_range(self) -> tuple[float, float]:
        """(-W/2, W/2): the open range of z that has a preimage."""
        return (-self._comp.half_w, self._comp.half_w)

    @property
    def x_bracket(self) -> tuple[float, float]:
        """flow.json's x bracket: every z in the range has its preimage inside."""
        return self._bracket

    @property
    def methods(self) -> tuple[str, ...]:
        """The inversion methods these artifacts support by name, the default first."""
        return tuple(sorted(METHODS, key=lambda m: m != self._method))

    @property
    def method(self) -> str:
        """The default method of this sampler."""
        return self._method

    @property
    def truncation_mass(self) -> float:
        """P(|Z| < W/2) for Z ~ N(0, 1): the model's total probability, which samples are normalised by."""
        return math.erf(self._comp.half_w / math.sqrt(2.0))

    @property
    def graph_noise(self) -> float:
        """Twice the largest |z| error of the graph's float32 f against float64 f, measured at load
        (first use) over the inverse table's nodes and a grid; the float32 solves trust x to noise / f'."""
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
        grid = np.concatenate([self._table.x, np.linspace(*np.percentile(self._table.x, [0, 100]), 4097)])
        return 2.0 * inversion.graph_noise(self._evaluate, self._comp, grid)

    @property
    def _sampler_graph(self) -> tuple:
        """(session of flow_sampler.onnx, its flow.json entry), loaded on first use of "graph"."""
        return self._once("_sampler_graph_value", self._load_sampler_graph)

    def _load_sampler_graph(self) -> tuple:
        session = load_graph(self._directory, self._meta, "sampler", self._device, self._threads,
                             verify=self._verify, golden=self._golden)
        return session, self._meta.sampler

    @property
    def _table(self) -> inversion.InverseTable:
        return self._once("_table_value", lambda: inversion.InverseTable(self._evaluate, self._bracket,
                                                                          self._comp.half_w))

    # -- graph evaluation ---------------------------------------------------------------------

    def _run(self, x32: np.ndarray, index: np.ndarray | None = None) -> list[np.ndarray]:
        """flow.onnx's three outputs at x32 float32 [M], each point placed at a batch position
        congruent to ``index`` (int64 [M]; default 0..M-1) modulo SLOTS."""
        return run_placed(self._session, "x", x32, index)

    def _evaluate(self, x: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z, dz, _ = self._run(np.ascontiguousarray(x, dtype=np.float32), index)
        return z.astype(np.float64), dz.astype(np.float64)

    def forward(self, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The flow at x (array-like [N], cast to float32): (z, dz_dx, log_prob), float32 [N] each,
        computed by flow.onnx in chunks."""
        x = np.ascontiguousarray(_as_floats(x, np.float32, "x"))
        outs = [np.empty(x.size, dtype=np.float32) for _ in range(3)]
        for i in range(0, x.size, self.chunk_size):
            for o, r in zip(outs, self._run(x[i:i + self.chunk_size], np.arange(i, min(i + self.chunk_size, x.size)))):
                o[i:i + r.size] = r
        return outs[0], outs[1], outs[2]

    # -- inversion ----------------------------------------------------------------------------

    def _check_method(self, method: str | None) -> str:
        if method is None:
            return getattr(self, "_method", DEFAULT_METHOD)
        if method not in METHODS:
            raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        return method

    @staticmethod
    def _check_iterations(iterations) -> int | None:
        if iterations is None:
            return None
        if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) \
                or not 1 <= iterations <= MAX_ITERATIONS:
            raise UsageError(f"iterations must be an integer from 1 to {MAX_ITERATIONS}, got {iterations!r}")
        return int(iterations)

    def default_iterations(self, method: str | None = None) -> int:
        """Bisection: ceil(log2(bracket width / float32 resolution)) steps; newton/table: the most
        graph evaluations before the float64 polish takes over; graph: the Newton steps built into
        flow_sampler.onnx."""
        method = self._check_method(method)
        if method == "bisection":
            return inversion.bisection_steps(*self._bracket)
        if method == "graph":
            return self._sampler_graph[1].newton_steps
        return inversion.NEWTON_MAX_EVALS

    def resolve(self, method: str | None = None, iterations: int | None = None) -> tuple[str, int]:
        """The method and iteration count a call runs with. "graph" has its Newton steps built in,
        so a call that asks for ``iterations`` without naming a method runs "table" instead."""
        if method is None and iterations is not None and self._method == "graph":
            method = FALLBACK_METHOD
        method = self._check_method(method)
        return method, self._iterations(method, iterations)

    def _iterations(self, method: str, iterations) -> int:
        """``iterations`` checked for ``method``, or its default."""
        iterations = self._check_iterations(iterations)
        if method == "graph":
            steps = self.default_iterations("graph")
            if iterations not in (None, steps):
                raise UsageError(f"method graph runs the {steps} Newton steps built into flow_sampler.onnx; "
                                 f"drop iterations or choose another method")
            return steps
        return iterations or self.default_iterations(method)

    def _invert_chunk(self, z: np.ndarray, start: int, method: str, iterations: int) -> np.ndarray:
        """x float64 for targets z float64 [M] that sit at positions start..start+M-1."""
        lo, hi = self._bracket
        index = np.arange(start, start + z.size, dtype=np.int64)
        if method == "bisection":
            return inversion.bisect(self._evaluate, z, index, lo, hi, iterations)
        if method == "graph":
            session, entry = self._sampler_graph
            x = run_placed(session, "z", z.astype(np.float32), index)[0].astype(np.float64)
            unsure = ~np.isfinite(x)
            for a, b in entry.float64_z_intervals:
                unsure |= (z >= a) & (z <= b)
            if unsure.any():
                x[unsure] = inversion.polish64(self._comp, z[unsure], np.where(np.isfinite(x[unsure]), x[unsure], 0.0),
                                               lo, hi)
            return x
        if method == "table":
            x0, a, b = self._table.start(z)
        else:
            mid = float(np.dot(self._comp.weight, self._comp.mu) / self._comp.weight.sum())
            x0, a, b = np.full(z.shape, mid), np.full(z.shape, lo), np.full(z.shape, hi)
        x, slope, converged = inversion.newton(self._evaluate, z, index, x0, a, b, self.graph_noise, iterations)
        with np.errstate(divide="ignore"):
            unsure = ~converged | ~(self.graph_noise / slope <= inversion.FLOAT32_ERROR_BUDGET)
        if unsure.any():
            x[unsure] = inversion.polish64(self._comp, z[unsure], x[unsure], lo, hi)
        return x

    def check_targets(self, z: np.ndarray) -> None:
        """InputError unless every z (float64) is finite and strictly inside (-W/2, W/2)."""
        lo, hi = self.z_range
        bad = ~(np.abs(z) < hi)  # NaN included
        if bad.any():
            k = int(bad.sum())
            raise InputError(f"{k} of {z.size} z value{'s' if z.size != 1 else ''} lie outside the flow's range "
                             f"({lo:.9g}, {hi:.9g}) (or are not finite) and have no preimage; "
                             f"pass z strictly inside the range")

    def invert(self, z, iterations: int | None = None, method: str | None = None) -> np.ndarray:
        """x with f(x) = z for z array-like [N] (taken as float64), every z strictly inside
        ``z_range`` (InputError naming how many are not). ``method``: one of ``methods``;
        ``iterations``: see ``default_iterations``. Returns x float32 [N]."""
        method, iterations = self.resolve(method, iterations)
        z = _as_floats(z, np.float64, "z")
        self.check_targets(z)
        out = np.empty(z.size, dtype=np.float32)
        for i in range(0, z.size, self.chunk_size):
            out[i:i + self.chunk_size] = self._invert_chunk(z[i:i + self.chunk_size], i, method, iterations)
        return out

    # -- sampling -----------------------------------------------------------------------------

    def draw_z(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """The next ``n`` standard normal draws from ``rng`` with |z| < W/2 (float64 [n]), skipping
        the rest: exactly N(0, 1) truncated to the range, and the same stream however it is split."""
        half = self._comp.half_w
        out = np.empty(n, dtype=np.float64)
        filled = 0
        while filled < n:
            z = rng.standard_normal(n - filled)
            z = z[np.abs(z) < half]
            out[filled:filled + z.size] = z
            filled += z.size
        return out

    def sample_chunks(self, n: int, seed: int | None = None, method: str | None = None,
                      iterations: int | None = None) -> Iterator[np.ndarray]:
        """Yield ``n`` samples as float32 chunks of at most ``chunk_size`` (same values for the same
        seed whatever the chunk size). Memory stays O(chunk_size)."""
        n = check_count(n)
        method, iterations = self.resolve(method, iterations)
        rng = np.random.default_rng(check_seed(seed))
        for i in range(0, n, self.chunk_size):
            z = self.draw_z(rng, min(self.chunk_size, n - i))
            yield self._invert_chunk(z, i, method, iterations).astype(np.float32)

    def sample(self, n: int, seed: int | None = None, method: str | None = None, iterations: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """``n`` samples of the flow's density (normalised over the range), float32 [n].
        ``seed``: int for reproducible draws (numpy Generator). The float32 output is allocated once;
        an ``n`` whose output does not fit in available memory raises InputError.
        ``progress(k)`` is called after each chunk of k samples."""
        n = check_count(n)
        check_seed(seed)
        need = n * np.dtype(np.float32).itemsize
        avail = available_memory()
        if avail is not None and need > avail:
            raise InputError(f"{n:,} samples need {need / 2**30:.1f} GiB for the float32 output, more than the "
                             f"{avail / 2**30:.1f} GiB of memory available; ask for fewer, or stream them to a "
                             f".npy file with 'aeflow sample --output'")
        try:
            out = np.empty(n, dtype=np.float32)
        except (MemoryError, ValueError):
            raise InputError(f"cannot allocate {n:,} float32 samples; ask for fewer") from None
        i = 0
        for chunk in self.sample_chunks(n, seed, method, iterations):
            out[i:i + chunk.size] = chunk
            i += chunk.size
            if progress is not None:
                progress(chunk.size)
        return out

    def density(self, x) -> np.ndarray:
        """The density the samples follow at x array-like [N]: exp(log_prob) / truncation_mass, float64 [N]."""
        return np.exp(self.forward(x)[2].astype(np.float64)) / self.truncation_mass

