"""Checks of numeric arguments and options, shared by the library and the CLI.

Each returns the value in its canonical Python type or raises a one-line ``UsageError`` that
names the argument as the caller spells it (``seed`` in the API, ``--seed`` in the CLI). Floats
where an integer is due, bools, strings, NaN/Inf, negative, zero and absurdly large values are
all refused here, before any work, so that no ``ValueError``/``OverflowError``/``MemoryError``
escapes later.
"""

from __future__ import annotations

import math
import numbers
import os

from aeflow.errors import UsageError

MAX_SEED = 2**63 - 1
MAX_BATCH = 2**48  # no machine holds more items in one batch; bigger numbers are typos  # numpy's Generator takes any int >= 0, torch.manual_seed at most 2**64 - 1


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_int(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum], or ``UsageError``. Accepts Python and numpy
    integers; a float where an int is due (even 3.0) is refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{name} must be an integer, got {_show(value)}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum:,} to {maximum:,}" if maximum is not None else f">= {minimum:,}"
        raise UsageError(f"{name} must be an integer {bound}, got {_show(value)}")
    return value


def check_float(value, name: str, minimum: float | None = None, maximum: float | None = None,
                above: bool = False) -> float:
    """``value`` as a finite float in [minimum, maximum] (``above``: strictly above ``minimum``),
    or ``UsageError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} must be a number, got {_show(value)}")
    try:
        f = float(value)
    except (OverflowError, ValueError):
        f = math.inf
    if not math.isfinite(f):
        raise UsageError(f"{name} must be a finite number, got {_show(value)}")
    if minimum is not None and (f < minimum or (above and f == minimum)):
        raise UsageError(f"{name} must be {'>' if above else '>='} {minimum:g}, got {_show(value)}")
    if maximum is not None and f > maximum:
        raise UsageError(f"{name} must be <= {maximum:g}, got {_show(value)}")
    return f


def check_seed(value, name: str = "seed") -> int | None:
    """A random seed: None (fresh entropy) or an int from 0 to 2**63 - 1."""
    if value is None:
        return None
    return check_int(value, name, 0, MAX_SEED)


def available_memory() -> int | None:
    """Bytes of memory available now (Linux /proc/meminfo or sysconf), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_batch(value, name: str, bytes_each: int, what: str = "images") -> int:
    """A batch size: a positive int whose batch fits in the memory available now (``bytes_each``:
    the working memory one item needs), else ``UsageError`` naming the largest that fits."""
    value = check_int(value, name, 1, MAX_BATCH)
    avail = available_memory()
    if avail is not None and value * bytes_each > avail:
        fits = max(1, avail // bytes_each)
        raise UsageError(f"{name}={value:,} needs about {value * bytes_each / 2**30:.1f} GiB of memory, more than the "
                         f"{avail / 2**30:.1f} GiB available; use at most {fits:,} {what}")
    return value
