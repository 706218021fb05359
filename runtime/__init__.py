"""The edge runtime: numpy + onnxruntime only, never torch."""
