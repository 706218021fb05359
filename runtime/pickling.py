"""Pickling runtime objects by their settings: an onnxruntime session cannot be pickled, so
``AnomalyScorer`` and ``FlowSampler`` pickle what they were built from and rebuild the session on
the receiving side, lazily, on first use (a Dask worker, a ``multiprocessing`` pool, a file).

What travels (``settings()``): the artifacts folder as an absolute path, or ``None`` for the
bundled folder (resolved again where the object is unpickled, so a worker uses its own installed
copy), device, batch/chunk size, precision or method, threshold override, threads, verify, and the
sha256 of the metadata file (threshold.json or flow.json) the sender loaded. The receiver refuses,
with one ``ArtifactError``, artifacts whose metadata differs from the sender's: two machines with
different models never score one job silently.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from aeflow.checks import check_threads
from aeflow.errors import ArtifactError, UsageError
from aeflow.files import sha256_file
from aeflow.runtime.contract import bundled_dir

_PENDING = "_pending_settings"
_LOCK = "_pending_lock"


def portable_artifacts(directory: Path) -> str | None:
    """``None`` for the bundled folder (the receiver resolves its own), else the absolute path."""
    try:
        if Path(directory).resolve() == bundled_dir().resolve():
            return None
    except OSError:
        pass
    return os.path.abspath(directory)


def metadata_digest(directory: Path, name: str) -> str | None:
    """sha256 of ``directory/name`` (threshold.json or flow.json), None when unreadable."""
    try:
        return sha256_file(Path(directory) / name)
    except OSError:
        return None


class Rebuildable:
    """Mixin: pickle by ``settings()``, rebuild from them on first attribute access.

    A subclass defines ``METADATA`` (the file whose digest travels) and ``settings() -> dict``:
    its constructor's arguments by name plus ``digest`` (and, for the scorer, ``threshold``,
    which its ``_rebuild`` applies). After unpickling (or ``replace``), the object holds only its
    settings; the first access to any attribute it lacks builds the real one, once, under a lock
    (threads may share it)."""

    METADATA = ""

    @classmethod
    def _rebuild(cls, settings: dict):
        return cls(**{k: v for k, v in settings.items() if k not in ("digest", "threshold")})

    def __getstate__(self) -> dict:
        pending = self.__dict__.get(_PENDING)
        return dict(pending) if pending is not None else self.settings()

    def __setstate__(self, state: dict) -> None:
        self.__dict__[_PENDING] = dict(state)
        self.__dict__[_LOCK] = threading.Lock()

    @classmethod
    def from_settings(cls, settings: dict):
        """An object built from ``settings`` (as ``settings()`` returns them) on first use."""
        obj = cls.__new__(cls)
        obj.__setstate__(settings)
        return obj

    def replace(self, **changes):
        """A copy with some settings changed (e.g. ``threads=1``), built on first use."""
        state = self.__getstate__()
        unknown = sorted(set(changes) - set(state))
        if unknown:
            raise UsageError(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(sorted(state))}")
        if "threads" in changes:
            check_threads(changes["threads"])
        return type(self).from_settings(state | changes)

    @property
    def loaded(self) -> bool:
        """False while an unpickled object has not built its session yet."""
        return _PENDING not in self.__dict__

    def __getattr__(self, name: str):
        d = self.__dict__
        if _PENDING not in d or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        with d[_LOCK]:
            if _PENDING in d:
                settings = d[_PENDING]
                fresh = type(self)._rebuild(settings)
                digest = metadata_digest(fresh.directory, self.METADATA)
                if settings.get("digest") and digest != settings["digest"]:
                    where = fresh.directory if settings.get("artifacts") else f"the bundled artifacts ({fresh.directory})"
                    raise ArtifactError(f"{where}: {self.METADATA} here differs from the one the "
                                        f"{type(self).__name__} was created with (sha256 {str(digest)[:12]}... vs "
                                        f"{settings['digest'][:12]}...); install the same artifacts on every machine")
                d.update(fresh.__dict__)
                del d[_PENDING]
        return object.__getattribute__(self, name)

