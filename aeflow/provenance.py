"""Package versions and machine facts recorded in artifacts and benchmark reports."""

from __future__ import annotations

import platform
from importlib import metadata


def package_versions(names=("aeflow", "numpy", "onnxruntime-gpu", "onnxruntime", "onnx", "onnxscript", "torch", "torchvision", "click")) -> dict[str, str]:
    """Installed versions of the named distributions (missing ones left out), plus Python's."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def cpu_name() -> str:
    """A human-readable CPU model name (Linux /proc/cpuinfo, else platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
