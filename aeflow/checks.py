"""Every check of an argument or option, for the library and the CLI: the value in its canonical type, or
one ``UsageError`` line naming it as the caller spells it (``seed``, ``--seed``) before any work."""

import contextlib
import glob
import math
import numbers
import os
import re
from pathlib import Path

from aeflow.errors import InputError, UsageError, one_line

MAX_SEED = 2**63 - 1  # numpy's Generator takes any int >= 0, torch.manual_seed at most 2**64 - 1
MAX_BATCH = 2**48  # no machine holds more items in one batch; bigger numbers are typos
MAX_COUNT = 10**12  # samples: 4 TB of float32, more is a typo
MAX_THREADS = 1024  # onnxruntime would try to start every one of them
CONFIDENCE, DEFAULT_K = 0.95, 3.0  # the calibration rule's defaults (aeflow.runtime.calibration)


def shorten(text: str, width: int = 40) -> str:
    """``text`` cut to ``width`` characters with "..." (THE truncator of values shown in messages)."""
    return text if len(text) <= width else text[:width - 3] + "..."


def _show(value) -> str:
    return shorten(repr(value))


def check_int(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` (a Python or numpy integer; not 3.0) as an int in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{name} must be an integer, got {_show(value)}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum:,} to {maximum:,}" if maximum is not None else f">= {minimum:,}"
        raise UsageError(f"{name} must be an integer {bound}, got {_show(value)}")
    return value


def check_float(value, name: str, minimum: float | None = None, maximum: float | None = None,
                above: bool = False, below: bool = False) -> float:
    """``value`` as a finite float in [minimum, maximum] (``above``, ``below``: not the bound itself)."""
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
    if maximum is not None and (f > maximum or (below and f == maximum)):
        raise UsageError(f"{name} must be {'<' if below else '<='} {maximum:g}, got {_show(value)}")
    return f


def check_seed(value, name: str = "seed") -> int | None:
    """A random seed: None (fresh entropy) or an int from 0 to 2**63 - 1."""
    return None if value is None else check_int(value, name, 0, MAX_SEED)


def available_memory(meminfo: str = "/proc/meminfo", cgroup: str = "/sys/fs/cgroup") -> int | None:
    """Bytes of memory available now (None: unknown): Linux's MemAvailable, or a cgroup v2 container's limit
    left (memory.max - memory.current + inactive_file) if smaller."""
    found = []
    with contextlib.suppress(OSError, ValueError, IndexError), open(meminfo) as f:
        found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")][:1]
    with contextlib.suppress(OSError, ValueError, IndexError):
        limit, stat = (Path(cgroup, name).read_text() for name in ("memory.max", "memory.stat"))
        if limit.strip() != "max":
            cache = next((int(line.split()[1]) for line in stat.splitlines() if line.startswith("inactive_file ")), 0)
            found.append(max(0, int(limit) - int(Path(cgroup, "memory.current").read_text()) + cache))
    return min(found, default=None)


def check_batch(value, name: str, bytes_each: int, what: str = "images") -> int:
    """A batch size whose batch (``bytes_each`` per item) fits in the memory available now, else ``UsageError``."""
    value = check_int(value, name, 1, MAX_BATCH)
    avail = available_memory()
    if avail is not None and value * bytes_each > avail:
        fits = max(1, avail // bytes_each)
        raise UsageError(f"{name}={value:,} needs about {value * bytes_each / 2**30:.1f} GiB of memory, more than the "
                         f"{avail / 2**30:.1f} GiB available; use at most {fits:,} {what}")
    return value


def check_threshold(value, what: str = "threshold") -> float:
    """``value`` as a finite float >= 0."""
    try:
        t = float(value)
    except (TypeError, ValueError, OverflowError):  # 10**400 overflows a float
        t = math.nan
    if isinstance(value, (bool, str, bytes)) or not math.isfinite(t) or t < 0:  # text is no number, as elsewhere
        raise UsageError(f"{what} must be a finite number >= 0, got {_show(value)}")
    return t


def check_count(n, name: str = "the number of samples") -> int:
    """A number of samples: an int from 1 to MAX_COUNT."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_COUNT:
        fewer = "; ask for fewer" if isinstance(n, numbers.Integral) and n > MAX_COUNT else ""
        raise UsageError(f"{name} must be a positive number of samples up to {MAX_COUNT:.0e}, got {_show(n)}"
                         f"{fewer}")
    return int(n)


def check_threads(threads) -> int | None:
    """``threads``: None (onnxruntime's choice) or an int from 1 to MAX_THREADS."""
    return None if threads is None else check_int(threads, "threads", 1, MAX_THREADS)


def check_rule(k=None, false_alarm_rate=None, confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """The calibration rule: ``(k, None)`` (k in (0, 100], default 3) or ``(None, rate)`` (rate in (0, 1))."""
    if k is not None and false_alarm_rate is not None:
        raise UsageError("pass k or false_alarm_rate, not both")
    check_float(confidence, "confidence", 0.0, 1.0, above=True, below=True)
    if false_alarm_rate is not None:
        return None, check_float(false_alarm_rate, "false_alarm_rate", 0.0, 1.0, above=True, below=True)
    return check_float(DEFAULT_K if k is None else k, "k", 0.0, 100.0, above=True), None


def check_scheduler(value, name: str = "scheduler") -> tuple[str, int | str]:
    """``local:N`` -> ("local", N), N from 1 to 4 per CPU core; ``tcp://`` or ``tls://HOST:PORT`` (an IPv6
    HOST in brackets) -> ("remote", the address)."""
    text = str(value).strip()
    if text.startswith("local:"):
        most = 4 * (os.cpu_count() or 1)
        n = text[len("local:"):]
        if not re.fullmatch("[0-9]{1,6}", n) or not 1 <= int(n) <= most:
            raise UsageError(f"{name} {shorten(text)}: local:N takes N from 1 to {most} worker processes "
                             f"(4 per CPU core)")
        return "local", int(n)
    m = re.fullmatch(r"(tcp|tls)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})", text)
    if m is None or not 1 <= int(m[3]) <= 65535:
        raise UsageError(f"{name} {shorten(repr(text))}: use local:N, tcp://HOST:PORT or tls://HOST:PORT "
                         f"(PORT from 1 to 65535)")
    return "remote", text


def expand_inputs(patterns, distinct: bool = True) -> list[Path]:
    """Input paths as given, glob patterns expanded in sorted order; ``InputError`` for one matching nothing and,
    where ``distinct``, for a file read twice (``_distinct``)."""
    paths: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        found = sorted(glob.glob(text, recursive=True)) if glob.has_magic(text) else []
        if os.path.lexists(text) or not glob.has_magic(text):  # a name: itself, unless a pattern matching others
            if others := [p for p in found if p != text]:
                raise InputError(f"{text}: names a file and is a pattern matching {len(others):,} other(s); for "
                                 f"the file alone write its special characters in brackets (e.g. [*]), or rename it")
            found = [text]
        if not found:
            raise InputError(f"{text}: no file or folder matches the pattern")
        paths.extend(Path(p) for p in found)
    return _distinct(paths) if distinct else paths


def _distinct(paths: list[Path]) -> list[Path]:
    """``paths``, or ``InputError`` where one file is read twice (device and inode): given twice, by any spelling or
    link, or given and also inside a folder given (a folder's visible entries, as its reader reads them)."""
    seen = {}
    for path in paths:
        with contextlib.suppress(OSError):  # what cannot be read is its reader's to say
            inside = [path / n for n in sorted(os.listdir(path)) if not n.startswith(".")] if path.is_dir() else []
            for entry, label in [(path, str(path))] + [(e, f"{e} in the folder {path}") for e in inside]:
                st = entry.stat()
                if (key := (st.st_dev, st.st_ino)) in seen:
                    raise InputError(f"{label}: read twice (also as {seen[key]}); pass each input once")
                seen[key] = label
    return paths


def as_floats(values, dtype, name: str):
    """``values`` (real numbers: array-like [N], or one number) as a numpy array of ``dtype`` (np.float32 or
    np.float64) [N]; ``InputError`` for other values, dimensions, or finite values beyond ``dtype``'s range."""
    import numpy as np  # here, not above: the CLI's --help imports no numpy

    try:
        array = np.asarray(values)
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"{name}: not an array of numbers ({one_line(e, 80)})") from None
    if array.dtype.kind not in "iuf":
        what = "complex values" if array.dtype.kind == "c" else "not real numbers"
        raise InputError(f"{name}: {what} (dtype {array.dtype}); pass real numbers")
    if array.ndim > 1:
        raise InputError(f"{name}: shape {list(array.shape)}; pass a 1-D array [N]")
    with np.errstate(over="ignore"):  # a finite value beyond the dtype's range becomes inf: said below
        out = array.astype(dtype).ravel()
    if not np.isfinite(out).all() and np.isfinite(array).all():
        raise InputError(f"{name}: values beyond {np.dtype(dtype).name}'s range; rescale them")
    return out
