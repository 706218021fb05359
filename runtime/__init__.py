"""aeflow's edge library: score images and sample the flow with numpy + onnxruntime only.

Nothing here imports torch, torchvision, onnx, click or matplotlib (a test blocks them and
runs this package), so it installs and runs on a bare edge device::

    from aeflow.runtime import AnomalyScorer, FlowSampler
    scores = AnomalyScorer().score(images)   # float32 [N]
    x = FlowSampler().sample(10_000, seed=0)  # float32 [10000]
"""

from aeflow.errors import AeflowError, ArtifactError, DeviceError, InputError, UsageError
from aeflow.runtime.contract import bundled_dir, demo_images
from aeflow.runtime.inputs import ArraySource, ImageSource, open_source
from aeflow.runtime.sampler import FlowSampler
from aeflow.runtime.scorer import AnomalyScorer

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
