"""ONNX export of the trained models, with self-checks against PyTorch (needs the ``train`` extra)."""
