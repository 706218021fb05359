"""``aeflow bench --device cuda``: the GPU path against the device's own limits measured in the same run (copies, a
float32 MatMul with TF32 off), every row checked against the CPU with ``aeflow.parity``'s tolerances."""

import itertools
import subprocess

import numpy as np
import onnxruntime as ort

from aeflow.analysis.bench import flops_per_image, matmul_model, spread, time_calls
from aeflow.datasets import to_float
from aeflow.parity import compare
from aeflow.progress import text_table
from aeflow.runtime import device
from aeflow.runtime.artifacts import artifacts_dir, demo_images, read_threshold
from aeflow.runtime.inversion import in_intervals
from aeflow.runtime.providers import create_session
from aeflow.runtime.sampler import FlowSampler
from aeflow.runtime.scorer import AnomalyScorer

TARGETS = {"device-resident fp32": 20e6, "host-fed uint8": 10e6, "sampler graph, device-resident": 1e9}  # on one H100
FULL = {"batch": 1 << 16, "host_images": 1 << 20, "samples": 10**8, "matmul": 8192, "copy_bytes": 1 << 30}
QUICK = {"batch": 1 << 12, "host_images": 1 << 14, "samples": 10**6, "matmul": 1024, "copy_bytes": 1 << 24}
# a row's share of a limit: (the row's work field, the limit row's first word, the limit's unit, the share's key)
SHARES = (("flops", "fp32", 1e12, "flop_share"), ("bytes", "device-to-device", 1e9, "byte_share"),
          ("host_bytes", "host-to-device", 1e9, "byte_share"))


def _row(name: str, kind: str, per_s: list[float], unit: str, check=None, **extra) -> dict:
    """A row: the spread of ``per_s``, the ``extra`` fields, the H100 target and the check against the CPU, if any."""
    if check is not None:
        extra["check"] = {"passed": check.passed, "max_abs": check.max_abs, "tolerance": check.tolerance}
    if name in TARGETS:
        extra["target"] = TARGETS[name]
    return {"name": name, "kind": kind, "unit": unit, **spread(per_s), **extra}


def device_name() -> str:
    """The GPU's name, driver and memory from nvidia-smi, or "unknown"."""
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except OSError:
        return "unknown (no nvidia-smi)"
    return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else "unknown"


def measure_limits(size: dict, repeats: int, where: str = "cuda") -> list[dict]:
    """Device-to-device and host-to-device copies (GB/s), a float32 MatMul n^3 with TF32 off (TFLOP/s), through
    onnxruntime's provider for ``where`` ("cuda"; "cpu" in the tests)."""
    n, m = size["copy_bytes"] // 4, size["matmul"]
    src, dst, tiny = (device._zeros([k], np.float32, where) for k in (n, n, 1))
    host = np.ones(size["copy_bytes"], dtype=np.uint8)
    dst8 = device._zeros([host.size], np.uint8, where)

    def copy():  # a device-to-device copy is asynchronous; the tiny copy back waits for it
        dst.update_inplace(src)
        tiny.numpy()

    session, rng = create_session(matmul_model(m), where), np.random.default_rng(0)
    binding = session.io_binding()
    for name in "AB":
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(rng.random((m, m), dtype=np.float32), where))
    binding.bind_ortvalue_output("Y", device._zeros([m, m], np.float32, where))
    limits = (("device-to-device copy", copy, 2 * size["copy_bytes"] / 1e9, "GB/s"),
              ("host-to-device copy (pageable)", lambda: dst8.update_inplace(host), host.size / 1e9, "GB/s"),
              (f"fp32 MatMul {m}^3, TF32 off", lambda: session.run_with_iobinding(binding), 2e-12 * m ** 3, "TFLOP/s"))
    return [_row(name, "limit", [work / t for t in time_calls(fn, repeats)], unit) for name, fn, work, unit in limits]


def _resident(session, x: np.ndarray, repeats: int, output: str) -> tuple[list[float], np.ndarray]:
    """Seconds per run of ``session`` with ``x`` already on its device, and its ``output``."""
    buffers = device._Buffers(session, None, x.shape, np.float32, device.device_of(session))
    buffers.images.update_inplace(x)
    times = time_calls(lambda: session.run_with_iobinding(buffers.binding), repeats)
    return times, buffers.outputs[output].numpy().copy()


def scoring_rows(directory, base: np.ndarray, size: dict, repeats: int, verify: bool,
                 where: str = "cuda") -> list[dict]:
    """Images/s device-resident (bound session, CUDA graph), host-fed (uint8, float32) and the latency of one
    image, each checked against the CPU's scores of the demo images ``base`` (uint8 [M, H, W])."""
    flops = flops_per_image(base.shape[1:])
    want = AnomalyScorer(directory, device="cpu", verify=verify).score(base)
    scorer = AnomalyScorer(directory, device=where, batch_size=size["batch"], verify=verify)
    check = lambda got: compare("score", got[:len(base)], want[:len(got)])  # noqa: E731
    x = to_float(np.resize(base, (size["batch"], *base.shape[1:])))
    pixels, rows = base[0].size, []
    # a captured graph replays the buffers of the binding it was captured with: its own session here
    graph = create_session(scorer.graph, where, cuda_graph=True) if scorer._bound and scorer._bound._graph else None
    for name, session in (("device-resident fp32", scorer._session), ("device-resident fp32, CUDA graph", graph)):
        try:
            if session is not None:
                times, scores = _resident(session, x, repeats, "score")
                rows.append(_row(name, "scoring", [len(x) / t for t in times], "images/s", check(scores),
                                 flops=flops, bytes=2 * 4 * pixels + 4, batch=len(x)))
        except Exception as e:  # e.g. a graph onnxruntime cannot capture: say so, measure the rest
            rows.append({"name": name, "kind": "error", "error": f"{type(e).__name__}: {str(e)[:300]}"})
    hx = np.resize(base, (size["host_images"], *base.shape[1:]))
    for name, data, per in (("host-fed uint8", hx, pixels),
                            ("host-fed float32", hx.astype(np.float32) / np.float32(255), 4 * pixels)):
        rows.append(_row(name, "scoring", [len(data) / t for t in time_calls(lambda: scorer.score(data), repeats)],
                         "images/s", check(scorer.score(data)), flops=flops, host_bytes=per,
                         batch=size["batch"]))
    user = AnomalyScorer(directory, device=where, verify=verify)  # the default batch size, one image
    lat = [t * 1e3 for t in time_calls(lambda: user.score(base[:1]), 20 * repeats)]
    rows.append(_row("latency, batch 1", "latency", lat, "ms", check(user.score(base[:1])),
                     p99=float(np.percentile(lat, 99))))
    return rows


def sampler_row(directory, size: dict, repeats: int, verify: bool, where: str = "cuda") -> dict:
    """Samples/s of flow_sampler.onnx over z already on the device, checked against the CPU outside flow.json's
    float64 intervals."""
    gpu, cpu = FlowSampler(directory, device=where, verify=verify), FlowSampler(directory, device="cpu", verify=verify)
    z = gpu.draw_z(np.random.default_rng(0), size["samples"]).astype(np.float32)
    times, x = _resident(gpu._sampler_graph(), z, repeats, "x")
    head = z[:1 << 16]
    keep = ~in_intervals(head, gpu.metadata.sampler.float64_z_intervals)
    want = cpu._sampler_graph().run(None, {"z": head})[0]
    return _row("sampler graph, device-resident", "sampling", [z.size / t for t in times], "samples/s",
                compare("sample", x[:head.size][keep], want[keep]), flops=0, bytes=8, n=int(z.size))


def run_cuda_bench(artifacts=None, quick: bool = False, repeats: int | None = None, verify: bool = True,
                   where: str = "cuda") -> dict:
    """Every CUDA row (``DeviceError`` where CUDA does not run): ``device``, ``onnxruntime``, ``sizes``,
    ``repeats``, ``rows`` (name, kind, unit, median/min/max, shares of the limits, target, check)."""
    directory = artifacts_dir(artifacts)
    size, repeats = (QUICK if quick else FULL), repeats or (3 if quick else 7)
    images = demo_images(directory, read_threshold(directory, verify).image_shape)  # the run's size, before any work
    create_session(device.PREP, where)  # strict: one DeviceError line where CUDA cannot run
    rows = measure_limits(size, repeats, where) + scoring_rows(directory, images, size, repeats, verify, where)
    rows.append(sampler_row(directory, size, repeats, verify, where))
    best = {r["name"].split(" ")[0]: r["max"] for r in rows if r["kind"] == "limit"}
    for r, (key, limit, scale, share) in itertools.product(rows, SHARES):
        if r.get(key) and best.get(limit):
            r[share] = r["median"] * r[key] / (best[limit] * scale)
    return {"device": device_name(), "onnxruntime": ort.__version__, "sizes": size, "repeats": repeats, "rows": rows}


def row_cells(r: dict) -> tuple[str, str, str]:
    """(name, check against the CPU, figures) of one row, for the text tables."""
    if "error" in r:
        return r["name"], "FAIL", r["error"]
    detail = f"median {r['median']:.4g} {r['unit']} [{r['min']:.4g}, {r['max']:.4g}]"
    detail += "".join(f", {r[k]:.1%} of the {label} limit" for k, label in (("flop_share", "FLOP"),
                                                                             ("byte_share", "bytes")) if k in r)
    detail += f", {r['median'] / r['target']:.2f}x the H100 target {r['target']:.0e}" if "target" in r else ""
    check = r.get("check")
    result = "-" if check is None else ("ok" if check["passed"] else "FAIL") + f" vs CPU {check['max_abs']:.1e}"
    return r["name"], result, detail


def format_rows(result: dict) -> str:
    """The CUDA rows as a text table."""
    return "\n".join([f"CUDA rows on {result['device']} (onnxruntime {result['onnxruntime']}; median [min, max] of "
                      f"{result['repeats']})"] + text_table([list(row_cells(r)) for r in result["rows"]]))
