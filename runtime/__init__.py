"""aeflow's edge library, numpy + onnxruntime only (no torch, onnx, click or matplotlib): ``AnomalyScorer().score(x)``
-> float32 [N], ``FlowSampler().sample(n, seed=0)`` -> float32 [n]; each imported on first use (PEP 562)."""

import importlib

from aeflow.errors import AeflowError, ArtifactError, DeviceError, InputError, UsageError

_LAZY = {"AnomalyScorer": "aeflow.runtime.scorer", "FlowSampler": "aeflow.runtime.sampler",
         "ImageSource": "aeflow.runtime.inputs", "ArraySource": "aeflow.runtime.inputs",
         "open_source": "aeflow.runtime.inputs", "bundled_dir": "aeflow.runtime.artifacts",
         "demo_images": "aeflow.runtime.artifacts"}

__all__ = [*_LAZY, "AeflowError", "ArtifactError", "DeviceError", "InputError", "UsageError"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'aeflow.runtime' has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(_LAZY[name]), name)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
