"""matplotlib, loaded lazily on the Agg backend: it is optional at run time (figures only)."""

import io

from aeflow.optional import require


def pyplot(purpose: str = "plotting"):
    """``matplotlib.pyplot`` on the Agg backend, or a one-line ``UsageError`` naming ``purpose``."""
    require("matplotlib", None, purpose).use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    """Render a figure to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def line_png(title: str, xlabel: str, ylabel: str, curves, log: bool = False, hist=None) -> bytes:
    """PNG bytes of ``curves`` [(x, y, ``plot`` keywords)] over an optional ``hist`` (values, ``hist`` keywords)."""
    fig, ax = pyplot().subplots(figsize=(7, 4))
    if hist is not None:
        ax.hist(hist[0], **hist[1])
    for x, y, style in curves:
        ax.plot(x, y, **style)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, yscale="log" if log else "linear")
    ax.legend()
    return png_bytes(fig)

