"""aeflow's edge library: score images and sample the flow with numpy + onnxruntime only.

Nothing here imports torch, torchvision, onnx, click or matplotlib (a test blocks them and
runs this package), so it installs and runs on a bare edge device::

    from aeflow.runtime import AnomalyScorer, FlowSampler
    scores = AnomalyScorer().score(images)   # float32 [N]
    x = FlowSampler().sample(10_000, seed=0)  # float32 [10000]
"""

import importlib

from aeflow.errors import AeflowError, ArtifactError, DeviceError, InputError, UsageError

# public name -> the module that defines it, imported on first use (PEP 562), so that importing
# one part (``aeflow score`` needs the scorer, not the sampler) does not load the others
_LAZY = {
    "AnomalyScorer": "aeflow.runtime.scorer",
    "FlowSampler": "aeflow.runtime.sampler",
    "ImageSource": "aeflow.runtime.inputs",
    "ArraySource": "aeflow.runtime.inputs",
    "open_source": "aeflow.runtime.inputs",
    "bundled_dir": "aeflow.runtime.artifacts",
    "demo_images": "aeflow.runtime.artifacts",
}

__all__ = [
    "AnomalyScorer",
    "FlowSampler",
    "ImageSource",
    "ArraySource",
    "open_source",
    "bundled_dir",
    "demo_images",
    "AeflowError",
    "ArtifactError",
    "DeviceError",
    "InputError",
    "UsageError",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aeflow.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
