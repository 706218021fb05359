"""Package versions and machine facts recorded in artifacts and benchmark reports."""

import contextlib
import platform
from importlib import metadata
from pathlib import Path


def package_versions(names=("aeflow", "numpy", "onnxruntime-gpu", "onnxruntime", "onnx", "onnxscript", "torch",
                           "torchvision", "click")) -> dict[str, str]:
    """Installed versions of the named distributions (missing ones left out), plus Python's."""
    out = {"python": platform.python_version()}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def cpu_name() -> str:
    """A human-readable CPU model name (Linux /proc/cpuinfo, else platform.processor())."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
