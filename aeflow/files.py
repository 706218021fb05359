"""Writing files so that nothing half-written is ever left, and hashing.

One mechanism serves every writer (score/sample outputs, checkpoints, figures, reports):

- ``atomic_path(path, replace=...)`` yields a temporary path beside ``path``; the body writes it,
  then it is fsynced and published under ``path`` in one step. On any exception, Ctrl-C or signal
  the temporary file is removed, and an ``OSError`` (disk full, out of inodes, read-only file
  system) becomes a one-line ``OutputError``.
- Publishing with ``replace=False`` (no ``--force``) is exclusive: it never replaces a file that
  appeared at ``path`` meanwhile (another process writing the same name), it fails with
  ``OutputError`` instead and keeps that file. ``replace=True`` overwrites.
- ``atomic_folder`` does the same for a folder of files; ``staged_folder`` and
  ``publish_folder`` stage files and move them into a folder.
- Every temporary file or folder alive is registered; ``remove_temporaries()`` removes what is
  left (the CLI calls it when a command ends, by a signal or otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from pathlib import Path
from typing import Iterator

_live: set[Path] = set()  # temporary files and folders not yet published or removed
_live_lock = threading.Lock()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def track(path: str | os.PathLike) -> Path:
    """Register a temporary file or folder for ``remove_temporaries``; returns it as a Path."""
    path = Path(path)
    with _live_lock:
        _live.add(path)
    return path


def untrack(path: str | os.PathLike) -> None:
    """Forget a temporary that was published or removed."""
    with _live_lock:
        _live.discard(Path(path))


def remove_temporaries() -> list[Path]:
    """Remove every registered temporary file or folder still on disk; returns those removed."""
    with _live_lock:
        paths = sorted(_live)
        _live.clear()
    import shutil

    removed = []
    for p in paths:
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
        except OSError:
            pass
    return removed


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Delay SIGINT, SIGTERM and SIGHUP (where the platform can) until the block ends."""
    import signal

    held = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def describe_os_error(e: OSError) -> str:
    """A short reason for an OSError: 'no space left on the device', 'read-only file system', ..."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space (or no free inodes) left on the device"
    return e.strerror or str(e) or type(e).__name__


def publish(tmp: Path, path: Path, replace: bool) -> None:
    """Give the complete file ``tmp`` the name ``path`` in one step. ``replace``: overwrite what is
    there; else exclusive: ``FileExistsError`` when ``path`` exists (``tmp`` is left in place)."""
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails with EEXIST instead of replacing: the exclusive publish
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV, errno.ENOSYS):
            raise
        # no hard links on this file system (FAT, some network mounts): claim the name first
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.replace(tmp, path)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, replace: bool, what: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the body to write; on success it is fsynced and
    published under ``path`` (``replace=False``: only if nothing appeared there meanwhile, see the
    module docstring). On any exception or signal the temporary file is removed; ``OSError``
    (disk full, out of inodes, ...) becomes a one-line ``OutputError``, and so does a file that
    appeared at ``path`` during an exclusive publish. ``what`` (e.g. "--output") starts the message."""
    import tempfile  # here, not at the top: reading (cold start of `aeflow score`) never needs it

    from aeflow.errors import OutputError

    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    try:
        with _signals_held():  # a signal between creating the file and registering it would orphan it
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            tmp = track(tmp)
    except OSError as e:
        raise OutputError(f"{label}: cannot write it ({describe_os_error(e)}); nothing written") from None
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        publish(tmp, path, replace)
    except FileExistsError:
        raise OutputError(f"{label}: another file appeared there while aeflow was writing; it was kept and "
                          f"nothing was written (pass --force to replace it)") from None
    except OSError as e:
        raise OutputError(f"{label}: cannot write it ({describe_os_error(e)}); nothing written") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        untrack(tmp)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; on success its files are fsynced and it is
    renamed onto ``path`` in one step (``publish_folder``; an existing ``path`` is first moved
    aside and then removed, only when ``replace``; else ``FileExistsError``), on any exception it
    is removed. Readers see the old folder, or the complete new one, never a partial one."""
    import shutil
    import tempfile

    path = Path(path)
    with _signals_held():
        staging = track(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield staging
        _fsync_files(staging)
        if (path.exists() or path.is_symlink()) and not replace:
            raise FileExistsError(f"{path} exists")
        publish_folder(staging, path, [], replace=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        untrack(staging)


def _fsync_files(folder: Path) -> None:
    """fsync every file below ``folder``."""
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def check_writable(path: str | os.PathLike, force: bool = False, what: str = "--output") -> Path:
    """Before any work: ``OutputError`` unless ``path``'s folder exists and is writable, ``path``
    is not a folder, and it does not exist yet (or ``force``). Returns ``path`` as a Path."""
    from aeflow.errors import OutputError

    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        what_is = "is not a folder" if folder.exists() else "does not exist"
        raise OutputError(f"{what} {path}: {folder} {what_is}; create the folder or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: folder {folder} is not writable; choose another path")
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give a file name")
    if (path.exists() or path.is_symlink()) and not force:
        raise OutputError(f"{what} {path}: file exists; pass --force to overwrite it")
    return path


def check_output_folder(path: str | os.PathLike, what: str = "--output", empty: bool = False) -> Path:
    """Before any work: ``OutputError`` unless ``path`` is a folder or does not exist yet, its
    parent exists, and the folder (or, for a new one, its parent) is writable; with ``empty``, an
    existing folder must also be empty. Returns ``path`` as a Path."""
    from aeflow.errors import OutputError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{what} {p}: exists and is not a folder; pass a folder path")
    if empty and p.is_dir() and any(p.iterdir()):
        raise OutputError(f"{what} {p}: the folder is not empty; pass --force to add to it or choose a new folder")
    parent = p.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"{what} {p}: parent folder {parent} does not exist; create it first")
    target = p if p.exists() else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {p}: {target} is not writable; choose another folder")
    return p


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` are the same file: compared by device and inode where both exist
    (hard links, symbolic links, ``./x`` and ``x`` alike), by resolved path otherwise."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_not_input(output: str | os.PathLike, inputs, what: str = "--output") -> None:
    """``UsageError`` when ``output`` is the same file as one of ``inputs`` (paths): a command
    never writes over what it reads."""
    from aeflow.errors import UsageError

    for p in inputs:
        p = Path(p)
        if same_file(output, p):
            raise UsageError(f"{what} {output} is also an input ({p}); write the output to another file")


def printable_name(name: str) -> str:
    """``name`` as valid Unicode for a UTF-8 output or terminal: a file name that is not valid UTF-8
    (Python holds its stray bytes as surrogates) gets those bytes escaped as ``\\xNN``."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Free bytes for an unprivileged user in ``folder``'s file system, None where unknown."""
    import shutil

    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def human_bytes(n: float) -> str:
    """``n`` bytes as '512 bytes', '3.4 KiB', '12.0 MiB', '1.5 GiB'."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
    return f"{n:.1f} TiB"


def check_space(path: str | os.PathLike, need: int, what: str = "--output") -> None:
    """``OutputError`` when ``path``'s folder has fewer than ``need`` bytes free (a check before the
    work; a disk that fills up later still fails cleanly in ``atomic_path``)."""
    from aeflow.errors import OutputError

    path = Path(path)
    free = free_bytes(path.parent if str(path.parent) else ".")
    if free is not None and need > free:
        raise OutputError(f"{what} {path}: needs about {human_bytes(need)}, only {human_bytes(free)} free there; "
                          f"free some space, ask for less, or write elsewhere")


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, replace: bool) -> None:
    """Write ``data`` to ``path`` atomically (``replace``: see ``atomic_path``)."""
    with atomic_path(path, replace=replace) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str, *, replace: bool) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``replace``: see ``atomic_path``)."""
    write_bytes_atomic(path, text.encode("utf-8"), replace=replace)


def publish_folder(staging: str | os.PathLike, directory: str | os.PathLike, names: list[str],
                   replace: bool = False) -> Path:
    """The one way a staged folder goes into place: put the files ``names``, written into
    ``staging`` (a folder on the same file system as ``directory``), into ``directory``. A new
    ``directory``: the staging folder is renamed onto it in one step (given the usual
    permissions). An existing one with ``replace``: it is moved aside, the staging folder renamed
    onto it, and the old one removed (``names`` unused). An existing one otherwise: the files are
    moved in one by one, in the order given (put the file that indexes the others last), its other
    files left alone, and the empty staging folder removed. Returns ``directory`` as a Path."""
    staging, directory = Path(staging), Path(directory)
    exists = directory.exists() or directory.is_symlink()
    if not exists or replace:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700
        old = None
        if exists:
            import shutil
            import tempfile

            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old", dir=directory.parent))
            os.replace(directory, old / directory.name)
        os.replace(staging, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return directory
    for name in names:
        os.replace(staging / name, directory / name)
    staging.rmdir()
    return directory


@contextlib.contextmanager
def staged_folder(directory: str | os.PathLike, last: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty staging folder for the files of ``directory``; when the block succeeds, every
    file written there is fsynced and published by ``publish_folder``, the names in ``last`` last
    (e.g. the metadata that names the other files' hashes). On any exception (Ctrl-C included) the
    staging folder is removed and ``directory`` is as it was. The staging folder sits in
    ``directory`` when it exists, else beside it (the same file system either way); ``OSError``
    when it cannot be made."""
    import shutil
    import tempfile

    directory = Path(directory)
    parent = directory if directory.is_dir() else directory.resolve().parent
    with _signals_held():
        staging = track(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=parent))
    try:
        yield staging
        _fsync_files(staging)
        names = sorted(p.name for p in staging.iterdir())
        publish_folder(staging, directory, [n for n in names if n not in last] + [n for n in last if n in names])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        untrack(staging)
