"""Pickling by settings: the scorer and sampler pickle what they were built from (artifacts folder or None
for the bundled one, the metadata's sha256) and rebuild on first use; other metadata is one ``ArtifactError``."""

import os
import threading

from aeflow.checks import check_threads
from aeflow.errors import ArtifactError, UsageError
from aeflow.files import same_file
from aeflow.runtime.artifacts import bundled_dir
from aeflow.runtime.jsoncheck import content_sha256

_PENDING, _LOCK = "_pending_settings", "_pending_lock"


class Rebuildable:
    """Mixin: pickle by ``settings()``; after unpickling or ``replace`` the first use builds the object, once."""

    METADATA = ""

    def _pin_origin(self) -> None:
        """Set what a pickle names: ``_portable``, None for the bundled folder (the receiver resolves its own)
        else the absolute path (now: a relative one depends on the cwd), and ``_digest``, the sha256 of the
        ``metadata`` read (its fields, as ``content_sha256`` seals them; not the file again, which may be newer)."""
        self._portable = None if same_file(self.directory, bundled_dir()) else os.path.abspath(self.directory)
        self._digest = content_sha256(self.metadata.to_json())

    def __getstate__(self) -> dict:
        pending = self.__dict__.get(_PENDING)
        return dict(pending) if pending is not None else self.settings()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({_PENDING: dict(state), _LOCK: threading.Lock()})

    @classmethod
    def from_settings(cls, settings: dict):
        """An object built from ``settings`` (as ``settings()`` returns them) on first use."""
        (obj := cls.__new__(cls)).__setstate__(settings)
        return obj

    def replace(self, **changes):
        """A copy with some settings changed (e.g. ``threads=1``), built on first use (for another
        ``artifacts`` folder at once, which pins that folder's metadata)."""
        state = self.__getstate__()
        settable = sorted(set(state) - {"digest"})
        if unknown := sorted(set(changes) - set(settable)):
            raise UsageError(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(settable)}")
        if "threads" in changes:
            changes["threads"] = check_threads(changes["threads"])
        if "artifacts" in changes:
            changes["digest"] = None
        copy = type(self).from_settings(state | changes)
        if "artifacts" in changes:
            copy.directory  # built now: its digest is the new folder's
        return copy

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
                fresh = type(self)(**{k: v for k, v in settings.items()
                                      if k not in ("digest", "threshold", "calibration")})
                if settings.get("threshold") is not None:  # the scorer's threshold, set after construction
                    fresh.threshold = settings["threshold"]
                if settings.get("calibration") is not None:  # an unsaved calibration: the p-values' reference too
                    fresh._calibration = settings["calibration"]
                digest = fresh._digest
                if settings.get("digest") and digest != settings["digest"]:
                    where = fresh.directory if settings.get("artifacts") else f"the bundled artifacts ({fresh.directory})"
                    raise ArtifactError(f"{where}: {self.METADATA} here differs from the one the "
                                        f"{type(self).__name__} was created with (content_sha256 here "
                                        f"{str(digest)[:12]}..., the sender's {settings['digest'][:12]}...); install "
                                        f"the same artifacts on every machine, and after a calibration or an export "
                                        f"there, create it again")
                d.update(fresh.__dict__)
                del d[_PENDING]
        return object.__getattribute__(self, name)

