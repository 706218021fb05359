"""aeflow: an MNIST autoencoder anomaly detector and a 1-D normalizing flow,
trained in PyTorch, exported to ONNX and run with numpy + onnxruntime."""

__version__ = "0.1.0"

from aeflow.errors import AeflowError

__all__ = ["AeflowError", "__version__"]
