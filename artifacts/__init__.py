"""The bundled reference artifacts (ONNX graphs, JSON metadata, PyTorch checkpoints, demo set)."""
