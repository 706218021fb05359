"""onnxruntime sessions on the CPU or CUDA provider, saying which one really runs (onnxruntime-gpu
lists CUDA even without a GPU and silently falls back; only ``session.get_providers()`` tells)."""

import contextlib
import ctypes
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from aeflow.errors import ArtifactError, DeviceError, UsageError, one_line

DEVICES = ("auto", "cpu", "cuda")
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def _loadable(*names: str) -> bool:
    for name in names:
        with contextlib.suppress(OSError):
            return bool(ctypes.CDLL(name))
    return False


def cuda_missing() -> list[str]:
    """What the CUDA provider lacks here, in words (empty when nothing obvious is missing)."""
    if CUDA not in ort.get_available_providers():
        return ["a CUDA build of onnxruntime (pip install onnxruntime-gpu)"]
    if not _loadable("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        return ["an NVIDIA GPU driver (libcuda.so.1 not found)"]
    with contextlib.suppress(Exception):  # older onnxruntime has none
        ort.preload_dlls()  # picks up the nvidia-* pip packages where they are installed
    return [what for libs, what in ((("libcudart.so.13", "libcudart.so.12", "libcudart.so"),
                                     "the CUDA runtime libraries (libcudart, libcublas)"),
                                    (("libcudnn.so.9", "libcudnn.so"), "cuDNN 9 (libcudnn.so.9)")) if not _loadable(*libs)]


# distributions that each install the one ``onnxruntime`` module (and overwrite each other's files)
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                     "onnxruntime-qnn", "onnxruntime-silicon", "ort-nightly", "ort-nightly-gpu")


def onnxruntime_installs(distributions=None) -> list[tuple[str, str]]:
    """(name, version) of every installed distribution providing the ``onnxruntime`` module
    (``distributions``: ``importlib.metadata`` Distributions, for tests)."""
    import importlib.metadata as md

    names = {(d.metadata.get("Name") or "").lower().replace("_", "-"): d.version
             for d in (md.distributions() if distributions is None else distributions)}
    return sorted((n, v) for n, v in names.items() if n in ORT_DISTRIBUTIONS)


def onnxruntime_conflict(installs: list[tuple[str, str]]) -> str | None:
    """A one-line warning with the fix when several onnxruntime distributions share the module, else None."""
    if len(installs) < 2:
        return None
    keep = "onnxruntime-gpu" if any(n == "onnxruntime-gpu" for n, _ in installs) else installs[0][0]
    both = " and ".join(f"{n} {v}" for n, v in installs)
    return (f"{both} are installed side by side; they share one 'onnxruntime' module and break each other "
            f"silently. Fix: pip uninstall -y {' '.join(n for n, _ in installs)} && pip install {keep}"
            + (" (or pip install 'aeflow[cuda]' for the CUDA libraries too)" if keep == "onnxruntime-gpu" else ""))


def create_session(model: str | os.PathLike | bytes, device: str = "auto", threads: int | None = None,
                   spinning: bool = True, cuda_graph: bool = False) -> ort.InferenceSession:
    """An ``InferenceSession`` for ``model`` (path or bytes) on ``device``: "cpu"; "cuda" or a ``DeviceError``
    naming what is missing; "auto": CUDA where it really runs. A corrupt model: ``ArtifactError``."""
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    opts = ort.SessionOptions()  # ORT_ENABLE_ALL graph optimisations by default
    opts.log_severity_level, opts.inter_op_num_threads = 3, 1
    if threads:
        opts.intra_op_num_threads = int(threads)
    for pool in ("intra", "inter") if not spinning else ():
        opts.add_session_config_entry(f"session.{pool}_op.allow_spinning", "0")
    name, source = ("model", model) if isinstance(model, bytes) else (Path(model).name, str(model))
    want_cuda = device == "cuda" or (device == "auto" and not cuda_missing())
    # TF32 matmuls would break the 1e-5 parity with PyTorch's float32
    providers = [(CUDA, {"use_tf32": "0", "enable_cuda_graph": str(int(cuda_graph))}), CPU] if want_cuda else [CPU]
    try:
        if want_cuda:  # a CUDA provider that fails to load logs a page of errors; the check below says one line
            ort.set_default_logger_severity(4)
        session = ort.InferenceSession(source, opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise ArtifactError(f"{name}: onnxruntime cannot load it ({one_line(e, 200)}); re-export or restore the "
                            f"file") from None
    finally:
        if want_cuda:
            ort.set_default_logger_severity(2)
    if device == "cuda" and session.get_providers()[0] != CUDA:
        missing = cuda_missing() or ["a working CUDA device (the provider failed to start)"]
        raise DeviceError(f'device="cuda": the CUDA provider cannot run here, missing {"; ".join(missing)}; '
                          f'use device="cpu" or "auto"')
    return session


def provider_of(session: ort.InferenceSession) -> str:
    """The provider that really runs the session, e.g. ``CPUExecutionProvider``."""
    return session.get_providers()[0]


def short_provider(name: str) -> str:
    """``CUDAExecutionProvider`` -> ``CUDA``."""
    return name.replace("ExecutionProvider", "")


def run_batched(session, x: np.ndarray, batch: int = 1000, outputs: list[str] | None = None) -> list[np.ndarray]:
    """``session`` (one input; or a function x [b, ...] -> k arrays [b, ...]) over ``x`` in slices of ``batch``:
    the named ``outputs`` (None: all), each [N, ...]."""
    run = session if callable(session) else lambda b: session.run(outputs, {session.get_inputs()[0].name: b})
    return [np.concatenate(p) for p in zip(*(run(x[i:i + batch]) for i in range(0, len(x), batch)))]
