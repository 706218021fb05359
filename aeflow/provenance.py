"""Package versions and machine facts recorded in artifacts and benchmark reports."""

import contextlib
import platform
from importlib import metadata


def package_versions(names=("aeflow", "numpy", "onnxruntime-gpu", "onnxruntime", "onnx", "onnxscript", "torch",
                           "torchvision", "click")) -> dict[str, str]:
    """Installed versions of the named distributions (missing ones left out), plus Python's."""
    out = {"python": platform.python_version()}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def _cpuinfo(key: str, path: str = "/proc/cpuinfo") -> str | None:
    """The value of the first ``key`` line of ``path`` (Linux), or None."""
    try:
        with open(path) as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(key)), None)
    except OSError:
        return None


def cpu_name() -> str:
    """A human-readable CPU model name (Linux /proc/cpuinfo, else platform.processor())."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_isa(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The widest vector ISA in ``cpuinfo``'s flags ("AVX-512 VNNI" ... "SSE", "+ AMX"), or "unknown"."""
    if (line := _cpuinfo("flags", cpuinfo)) is None:
        return "unknown"
    flags = set(line.split())
    isa = next((name for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx512bw", "AVX-512"),
                                        ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2")) if flag in flags), "SSE")
    return isa + (" + AMX" if "amx_int8" in flags else "")
