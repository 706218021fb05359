"""Atomic file writing and hashing: a crash or kill mid-write never leaves a half-written file."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterator


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto
    ``path`` in one step, on any exception (or KeyboardInterrupt) it is removed."""
    import tempfile  # here, not at the top: reading (cold start of `aeflow score`) never needs it

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; on success its files are fsynced and it is
    renamed onto ``path`` in one step (an existing ``path`` is first moved aside and then removed,
    only when ``replace``; else ``FileExistsError``), on any exception it is removed. Readers see
    the old folder, or the complete new one, never a partial one."""
    import shutil
    import tempfile

    path = Path(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield staging
        for f in staging.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700
        old = None
        if path.exists() or path.is_symlink():
            if not replace:
                raise FileExistsError(f"{path} exists")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(staging, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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
    if path.exists() and not force:
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


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def publish_folder(staging: str | os.PathLike, directory: str | os.PathLike, names: list[str]) -> Path:
    """Put the files ``names``, written into ``staging`` (a folder beside ``directory``, on the
    same file system), into ``directory``. A new ``directory``: the staging folder is renamed onto
    it in one step (given the usual permissions). An existing one: the files are moved in one by
    one, in the order given (put the file that indexes the others last), its other files left
    alone, and the empty staging folder removed. Returns ``directory`` as a Path."""
    staging, directory = Path(staging), Path(directory)
    if not directory.exists():
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700
        os.replace(staging, directory)
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
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=parent))
    try:
        yield staging
        names = sorted(p.name for p in staging.iterdir())
        for name in names:
            with open(staging / name, "rb") as f:
                os.fsync(f.fileno())
        publish_folder(staging, directory, [n for n in names if n not in last] + [n for n in last if n in names])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
