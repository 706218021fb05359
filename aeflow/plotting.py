"""matplotlib, loaded lazily on the Agg backend: it is optional at run time (figures only)."""

from __future__ import annotations

import io
import os

from aeflow.errors import UsageError
from aeflow.files import write_bytes_atomic


def pyplot(purpose: str = "plotting"):
    """``matplotlib.pyplot`` on the Agg backend, or a one-line ``UsageError`` saying
    ``"<purpose> needs matplotlib: pip install matplotlib"`` where it is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError(f"{purpose} needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def save_png(fig, path: str | os.PathLike) -> None:
    """Write a figure to ``path`` as PNG, atomically, and close it."""
    write_bytes_atomic(path, png_bytes(fig), replace=True)
