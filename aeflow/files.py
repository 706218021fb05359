"""The one owner of every write (``aeflow.targets.check_target`` decides before any work whether a path may be
written): ``atomic_path`` and ``staged_folder`` write beside it, fsync and publish in one step (exclusively unless
``replace``), leaving nothing on any exception or signal. ``locked`` serialises read-modify-writes."""

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import stat
import threading
from pathlib import Path
from typing import Collection, Iterator

from aeflow.errors import OutputError

_live: set[Path] = set()  # temporary files and folders not yet published or removed
_live_lock = threading.RLock()  # re-entrant: a signal's clean-up may run where the main thread was holding it
# the signals that end a command (aeflow.cli: one line, exit 128 + the signal), held while a temporary is made
END_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
# the END_SIGNALS this command received (aeflow.cli's handler records them): nothing is published after
# one, even where the exception it raised was swallowed (e.g. inside a library's lazy import)
RECEIVED: list[int] = []
# the outputs this command published whole, files and folders; None outside a command line (aeflow.cli sets a list)
PUBLISHED: list[Path] | None = None
_held = [0]  # depth of the main thread's _signals_held blocks: a signal is only recorded inside them
FORCE = "force=True"  # what the refusals below ask for; the command line says --force (cli.FLAG_WORDING)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return _sha256(f)


def _sha256(f) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 16), b""):  # 64 KiB blocks reuse one heap block; 1 MiB ones would not
        h.update(block)
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str | None:
    """``sha256_file`` of a regular file (links followed), None where there is none (absent, a folder, a pipe or a
    device, which are never read: a pipe would block, /dev/zero never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with open(fd, "rb") as f:
        return _sha256(f)


def track(path: str | os.PathLike) -> Path:
    """Register a temporary file or folder for ``remove_temporaries``; returns it as a Path."""
    path = Path(path)
    with _live_lock:
        _live.add(path)
    return path


def _discard(path: Path) -> None:
    """Remove a registered temporary file or folder (if still there) and forget it."""
    with contextlib.suppress(OSError):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink()
    with _live_lock:
        _live.discard(path)


def remove_temporaries() -> None:
    """Remove every registered temporary file or folder still on disk."""
    with _live_lock:
        paths = sorted(_live)
    for p in paths:
        _discard(p)


def signal_deferred() -> bool:
    """Whether the main thread is inside ``_signals_held`` (the CLI's handler then only records a signal)."""
    return _held[0] > 0


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Delay END_SIGNALS (the main thread's) to the block's end, raised there as ``KeyboardInterrupt``."""
    main = threading.current_thread() is threading.main_thread()
    _held[0] += main
    try:
        yield
    finally:
        _held[0] -= main
    if main and RECEIVED and not _held[0]:
        raise KeyboardInterrupt


def _temporary(path: Path, suffix: str = ".tmp", folder: bool = False, parent: Path | None = None) -> Path:
    """A new file (or folder) ``.NAME.*`` beside ``path`` (or in ``parent``), NAME cut to 40 characters to fit
    where ``path`` fits; tracked unless ".old" (it may hold the only copy of what it replaces)."""
    import tempfile  # not at the top: neither 'aeflow --help' nor reading needs it (cold start)

    full, umask = Path(os.path.abspath(path)), os.umask(0)
    os.umask(umask)
    where = dict(prefix=f".{full.name[:40]}.", suffix=suffix, dir=full.parent if parent is None else parent)
    with _signals_held():  # a signal between creating it and registering it would orphan it
        if folder:
            made = tempfile.mkdtemp(**where)
        else:
            fd, made = tempfile.mkstemp(**where)
            os.close(fd)
        made = Path(made) if suffix == ".old" else track(made)
    kept = None if folder else _kept_mode(full)  # until published: read and written by its owner, others as before
    _chmod(made, (0o777 if folder else 0o666) & ~umask if kept is None else kept | 0o600)  # mk*temp: 0700, 0600
    return made


def _chmod(path: Path, mode: int | None) -> None:
    """``os.chmod`` where ``mode`` is given and the file system allows it (FAT may refuse a change)."""
    if mode is not None:
        with contextlib.suppress(OSError):
            os.chmod(path, mode)


def _kept_mode(path: str | os.PathLike, folder: bool = False) -> int | None:
    """The permissions (``rwx`` bits) that a file (``folder``: a folder) replacing ``path`` takes: those of one there
    that this user owns (not a link's target's, not another user's, which the new owner would lock them out of)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    mine = not hasattr(os, "geteuid") or st.st_uid == os.geteuid()
    kind = stat.S_ISDIR(st.st_mode) if folder else stat.S_ISREG(st.st_mode)
    return st.st_mode & 0o777 if kind and mine else None


def describe_os_error(e: OSError) -> str:
    """A short reason for an OSError: 'no space left on the device', 'read-only file system', ..."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space (or no free inodes) left on the device"
    if e.errno == errno.EPIPE:
        return "the reader quit"
    return e.strerror or str(e) or type(e).__name__


@contextlib.contextmanager
def _one_line(label: str, force: bool = False) -> Iterator[None]:
    """An ``OSError`` in the block as one ``OutputError`` line; a file that appeared meanwhile: kept, said so."""
    try:
        yield
    except FileExistsError:
        raise OutputError(f"{label}: another file appeared there while aeflow was writing; it was kept and nothing "
                          f"was written" + ("" if force else f"; pass {FORCE} to replace it")) from None
    except OSError as e:
        raise OutputError(f"{label}: cannot write it ({describe_os_error(e)}); nothing written") from None


def publish(tmp: Path, path: Path, replace: bool) -> None:
    """Name the complete file ``tmp`` ``path`` in one step; ``FileExistsError`` where it exists, unless ``replace``."""
    if replace:
        return os.replace(tmp, path)
    try:
        os.link(tmp, path)  # fails with EEXIST (FileExistsError) instead of replacing: the exclusive publish
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV, errno.ENOSYS):
            raise
        with _signals_held():  # no hard links here (FAT, some network mounts): claim the name, then fill it
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            try:
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):  # the name claimed above is ours: nothing half-done stays
                    os.unlink(path)
                raise
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, replace: bool, what: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write, then fsync and ``publish`` it (removed on any exception
    or signal); an ``OSError`` is one ``OutputError`` line."""
    path, tmp = Path(path), None
    with _one_line(f"{what} {path}" if what else str(path)):
        try:
            tmp = _temporary(path)
            yield tmp
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            if RECEIVED:  # publishing is the point of no return: after a signal, the command was interrupted
                raise KeyboardInterrupt
            _chmod(tmp, _kept_mode(path))  # a file replaced keeps its permissions
            publish(tmp, path, replace)
            _published(path)
        finally:
            if tmp is not None:
                _discard(tmp)


def _published(path: Path) -> None:
    """Record ``path`` in ``PUBLISHED`` (where a command line keeps it), unless it went into a temporary folder."""
    if PUBLISHED is not None and not any(parent in _live for parent in Path(os.path.abspath(path)).parents):
        PUBLISHED.append(Path(path))


def forget_published(path: str | os.PathLike) -> None:
    """Take ``path`` out of ``PUBLISHED``: what it held before was put back."""
    if PUBLISHED is not None and Path(path) in PUBLISHED:
        PUBLISHED.remove(Path(path))


def keep_copy(path: Path) -> Path:
    """An untracked copy ``.NAME.*.old`` of the file ``path`` beside it, to put back with one ``os.replace``."""
    kept = None
    with _one_line(str(path)):
        try:
            with _signals_held():  # a signal raises after the block, where the copy is known and removed
                kept = _temporary(path, ".old")
                shutil.copyfile(path, kept)
                shutil.copymode(path, kept)  # put back with its permissions
        except BaseException:
            if kept is not None:
                kept.unlink(missing_ok=True)
            raise
    return kept


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are the same file: by device and inode where both exist, else by resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def printable_name(name: str) -> str:
    """``name`` as valid Unicode: stray bytes of a file name that is not UTF-8 escaped as ``\\xNN``."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def human_bytes(n: float) -> str:
    """``n`` bytes as '512 bytes', '3.4 KiB', '12.0 MiB', '1.5 GiB'."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"


def check_space(path: str | os.PathLike, need: int) -> None:
    """``OutputError`` when ``path``'s folder has fewer than ``need`` bytes free (before the work)."""
    path = Path(path)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return
    if need > free:
        raise OutputError(f"--output {path}: needs about {human_bytes(need)}, only {human_bytes(free)} free there; "
                          f"free some space, ask for less, or write elsewhere")


def write_atomic(path: str | os.PathLike, data: bytes | str, *, replace: bool) -> None:
    """Write ``data`` (a str as UTF-8) to ``path`` atomically (``replace``: see ``atomic_path``)."""
    with atomic_path(path, replace=replace) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def publish_folder(staging: str | os.PathLike, directory: str | os.PathLike, names: list[str],
                   replace: Collection[str] | None = None, force: bool = False, remove: Collection[str] = (),
                   unchanged: dict[str, str | None] | None = None) -> None:
    """Put the files ``names`` of ``staging`` into ``directory``, then delete its files ``remove``; one step for
    signals. A ``staging`` beside it is renamed to it (``replace``: the names it held, then set aside and removed);
    one inside it moves its files in the order given, each checked first, none over a file unless ``force``.
    ``FileExistsError`` where something appeared meanwhile that ``force`` does not allow; ``OutputError`` where a
    file of ``unchanged`` (name -> the sha256 the work began from, None: absent) is another now."""
    staging, directory = Path(staging), Path(directory)
    with locked(directory), _signals_held():  # another aeflow's set waits; this one goes in whole, or not at all
        if RECEIVED:  # as in atomic_path
            raise KeyboardInterrupt
        _as_found(staging, directory, names, unchanged or {})
        inside = same_file(staging.parent, directory)
        if not inside and replace is not None and directory.is_dir():
            _replace_folder(staging, directory, set(replace))
        elif not inside:
            try:
                os.rename(staging, directory)  # over nothing, or an empty folder
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise
                if not (force and directory.is_dir()):
                    raise FileExistsError(errno.EEXIST, "it appeared meanwhile", str(directory)) from None
                inside = True  # with force, the files go into the folder that appeared meanwhile
        if inside:
            taken = [n for n in names if os.path.lexists(directory / n)]
            if folders := [n for n in taken if (directory / n).is_dir()]:  # found before any file is moved in
                raise IsADirectoryError(errno.EISDIR, f"{folders[0]} is a folder where a file goes")
            if taken and not force:
                raise FileExistsError(errno.EEXIST, "it appeared meanwhile", str(directory / taken[0]))
            for name in names:
                publish(staging / name, directory / name, force)  # exclusive unless force: never over a newcomer
            staging.rmdir()
        for name in remove:
            (directory / name).unlink(missing_ok=True)
        _published(directory)


def _as_found(staging: Path, directory: Path, names: list[str], unchanged: dict[str, str | None]) -> None:
    """Before ``publish_folder`` moves a file: ``OutputError`` where a file of ``unchanged`` is another now; each
    staged file that replaces one of ``directory`` takes its permissions."""
    for name, digest in unchanged.items():
        if file_digest(directory / name) != digest:
            raise OutputError(f"{directory / name}: another command wrote it while aeflow worked from it; "
                              f"nothing written - run again")
    for name in names:
        _chmod(staging / name, _kept_mode(directory / name))
    _chmod(staging, _kept_mode(directory, folder=True))  # a folder replaced whole keeps its own permissions too


def _replace_folder(staging: Path, directory: Path, held: set[str]) -> None:
    """Make ``staging`` the folder ``directory``; the old one, set aside, removed if it holds only ``held``."""
    old = _temporary(directory, ".old", folder=True)
    try:
        os.replace(directory, old / directory.name)
    except OSError:  # e.g. a parent that is not writable: nothing moved, nothing set aside stays
        old.rmdir()
        raise
    try:
        if set(os.listdir(old / directory.name)) - held:  # a file appeared in it meanwhile
            raise FileExistsError(errno.EEXIST, "it appeared meanwhile", str(directory))
        os.replace(staging, directory)
    except OSError:  # the user's folder back where it was, whole
        os.replace(old / directory.name, directory)
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(directory: str | os.PathLike, last: tuple[str, ...] = (), what: str = "--output",
                  replace: bool = False, force: bool = False, remove: list[str] | None = None,
                  unchanged: dict[str, str | None] | None = None) -> Iterator[Path]:
    """Yield a new empty folder for the files of ``directory``, then fsync and ``publish_folder`` them, ``last``
    last (the metadata naming the others' hashes); ``remove``: stale names the body may add to; ``unchanged``: as
    ``publish_folder`` checks it. On any exception ``directory`` is as it was; an ``OSError``: one ``OutputError``."""
    directory, staging = Path(directory), None
    with _one_line(f"{what} {directory}", force):
        try:
            held = os.listdir(directory) if replace and directory.is_dir() else None  # not what appears meanwhile
            staging = _temporary(directory, folder=True, parent=None if replace or not directory.is_dir() else directory)
            yield staging
            for f in staging.rglob("*"):
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            names = sorted(p.name for p in staging.iterdir())
            publish_folder(staging, directory, [n for n in names if n not in last] + [n for n in last if n in names],
                           held, force, remove or (), unchanged)
        finally:
            if staging is not None:
                _discard(staging)


@contextlib.contextmanager
def locked(folder: str | os.PathLike, shared: bool = False) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` for a read-modify-write in it, a ``shared`` one to read several of its
    files as one state (none where flock is missing). Not re-entrant: never nest two on one folder."""
    fd = None
    with contextlib.suppress(ImportError, OSError):
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)
