"""PyTorch training of the homework's two models (needs the ``train`` extra)."""
