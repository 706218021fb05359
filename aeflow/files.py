"""The one owner of every write: ``check_target`` decides before any work whether a path may be written;
``atomic_path`` and ``staged_folder`` write beside it, fsync and publish in one step (exclusively unless
``replace``), leaving nothing on any exception or signal. ``locked`` serialises read-modify-writes."""

import contextlib
import errno
import fnmatch
import glob
import hashlib
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Collection, Iterator

from aeflow.checks import expand_inputs
from aeflow.errors import OutputError, UsageError

_live: set[Path] = set()  # temporary files and folders not yet published or removed
_live_lock = threading.Lock()
# the signals that end a command (aeflow.cli: one line, exit 128 + the signal), held while a temporary is made
END_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
# the END_SIGNALS this command received (aeflow.cli's handler records them): nothing is published after
# one, even where the exception it raised was swallowed (e.g. inside a library's lazy import)
RECEIVED: list[int] = []
PUBLISHED: list[Path] = []  # the folders this command published (aeflow.cli clears it with RECEIVED)
_held = [0]  # depth of the main thread's _signals_held blocks: a signal is only recorded inside them
FORCE = "force=True"  # what the refusals below ask for; the command line says --force (cli.FLAG_WORDING)


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
    """Delay END_SIGNALS (the main thread's: Python runs handlers only there) until the block ends: one
    received inside is raised as ``KeyboardInterrupt`` at its end."""
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
    where ``path`` fits; registered unless ".old" (it may hold the only copy of the folder it replaces)."""
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
    with contextlib.suppress(OSError):  # mkdtemp, mkstemp make 0700, 0600 (FAT may refuse a change)
        os.chmod(made, (0o777 if folder else 0o666) & ~umask)
    return made


def describe_os_error(e: OSError) -> str:
    """A short reason for an OSError: 'no space left on the device', 'read-only file system', ..."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space (or no free inodes) left on the device"
    if e.errno == errno.EPIPE:
        return "the reader quit"
    return e.strerror or str(e) or type(e).__name__


def _cannot_write(label: str, e: OSError) -> OutputError:
    return OutputError(f"{label}: cannot write it ({describe_os_error(e)}); nothing written")


def _appeared(label: str) -> OutputError:
    return OutputError(f"{label}: another file appeared there while aeflow was writing; it was kept and "
                       f"nothing was written; pass {FORCE} to replace it")


def publish(tmp: Path, path: Path, replace: bool) -> None:
    """Give the complete file ``tmp`` the name ``path`` in one step: ``replace`` overwrites, else
    ``FileExistsError`` when ``path`` exists."""
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
    or signal). An ``OSError``, or a file appearing at ``path`` meanwhile: one ``OutputError`` line."""
    path = Path(path)
    label, tmp = f"{what} {path}" if what else str(path), None
    try:
        tmp = _temporary(path)
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if RECEIVED:  # publishing is the point of no return: after a signal, the command was interrupted
            raise KeyboardInterrupt
        publish(tmp, path, replace)
    except FileExistsError:
        raise _appeared(label) from None
    except OSError as e:
        raise _cannot_write(label, e) from None
    finally:
        if tmp is not None:
            _discard(tmp)


def keep_copy(path: Path) -> Path:
    """A copy of the file ``path`` beside it (``.NAME.*.old``, untracked: it may hold the only copy of it) to put
    back with one ``os.replace``, which a signal does not stop (nothing is published after one)."""
    kept = _temporary(path, ".old")
    shutil.copyfile(path, kept)
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


def check_space(path: str | os.PathLike, need: int, what: str = "--output") -> None:
    """``OutputError`` when ``path``'s folder has fewer than ``need`` bytes free (before the work)."""
    path = Path(path)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return
    if need > free:
        raise OutputError(f"{what} {path}: needs about {human_bytes(need)}, only {human_bytes(free)} free there; "
                          f"free some space, ask for less, or write elsewhere")


def write_atomic(path: str | os.PathLike, data: bytes | str, *, replace: bool) -> None:
    """Write ``data`` (a str as UTF-8) to ``path`` atomically (``replace``: see ``atomic_path``)."""
    with atomic_path(path, replace=replace) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def publish_folder(staging: str | os.PathLike, directory: str | os.PathLike, names: list[str],
                   replace: Collection[str] | None = None, force: bool = False, remove: Collection[str] = ()) -> None:
    """Put the files ``names`` of ``staging`` into ``directory``. A ``staging`` beside it becomes ``directory`` in
    one rename, which the kernel refuses where a folder with files appeared there meanwhile: ``FileExistsError``
    (``force``: the files go into it); ``replace`` (the names the folder held at the start): that folder is set
    aside and removed, unless it holds others now. A ``staging`` inside it gives up its files one by one in the
    order given, other files left alone, none over a file unless ``force``: every name is checked before any moves.
    Then the files ``remove`` (stale beside the new ones) go. One step for signals: one received meanwhile ends
    the command after it, ``directory`` recorded in ``PUBLISHED`` (aeflow.cli says it was written)."""
    staging, directory = Path(staging), Path(directory)
    with locked(directory), _signals_held():  # another aeflow's set waits; this one goes in whole, or not at all
        if RECEIVED:  # as in atomic_path
            raise KeyboardInterrupt
        if same_file(staging.parent, directory) or not _rename(staging, directory, replace, force):
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
        PUBLISHED.append(directory)


def _rename(staging: Path, directory: Path, replace: Collection[str] | None, force: bool) -> bool:
    """``publish_folder``'s ``staging`` beside ``directory`` made that folder; False where, with ``force``, its
    files must go into a folder that appeared there meanwhile."""
    if replace is not None and directory.is_dir():
        _replace_folder(staging, directory, set(replace))
        return True
    try:
        os.rename(staging, directory)  # over nothing, or an empty folder
        return True
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        if not (force and directory.is_dir()):
            raise FileExistsError(errno.EEXIST, "it appeared meanwhile", str(directory)) from None
    return False


def _replace_folder(staging: Path, directory: Path, held: set[str]) -> None:
    """Make ``staging`` the folder ``directory``, the old one set aside, then removed if it holds only ``held``
    (with signals held, as ``publish_folder`` calls it: no set-aside folder stays)."""
    old = _temporary(directory, ".old", folder=True)
    try:
        os.replace(directory, old / directory.name)
    except OSError:  # e.g. the current folder ("-o ."): nothing moved, nothing set aside stays
        old.rmdir()
        raise
    if set(os.listdir(old / directory.name)) - held:  # a file appeared in it meanwhile: all put back
        os.replace(old / directory.name, directory)
        old.rmdir()
        raise FileExistsError(errno.EEXIST, "it appeared meanwhile", str(directory))
    os.replace(staging, directory)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(directory: str | os.PathLike, last: tuple[str, ...] = (), what: str = "--output",
                  replace: bool = False, force: bool = False, remove: list[str] | None = None) -> Iterator[Path]:
    """Yield a new empty folder (inside ``directory`` when it exists, unless ``replace``) for its files; then
    fsync them and ``publish_folder`` them, the names in ``last`` last (the metadata naming the others' hashes):
    ``replace`` replaces the folder as it is now whole, ``force`` files of those names; ``remove``: names of stale files
    to remove with them (the body may add to the list). On any exception
    ``directory`` is as it was; an ``OSError``: one ``OutputError`` line; a file or folder that appeared
    meanwhile where ``force`` does not allow it is kept: one line saying so."""
    directory, staging = Path(directory), None
    try:
        held = os.listdir(directory) if replace and directory.is_dir() else None  # not what appears meanwhile
        staging = _temporary(directory, folder=True, parent=directory if directory.is_dir() and not replace else None)
        yield staging
        for f in staging.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        names = sorted(p.name for p in staging.iterdir())
        publish_folder(staging, directory, [n for n in names if n not in last] + [n for n in last if n in names],
                       held, force, remove or ())
    except FileExistsError:
        raise _appeared(f"{what} {directory}") from None
    except OSError as e:
        raise _cannot_write(f"{what} {directory}", e) from None
    finally:
        if staging is not None:
            _discard(staging)


def _bundled() -> Path:
    import aeflow.artifacts  # the package data folder; imports nothing

    return Path(aeflow.artifacts.__path__[0]).resolve()


def _real(paths) -> list[str]:
    """Each of ``paths`` absolute, links resolved; each folder once (a glob's thousands share a few)."""
    folders, out = {}, []
    for path in map(os.path.abspath, paths):
        head, name = os.path.split(path)
        folder = folders[head] = folders.get(head) or os.path.realpath(head)
        out.append(os.path.realpath(path) if os.path.islink(path) else os.path.join(folder, name))
    return out


def _key(path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, links followed; None where it does not exist."""
    with contextlib.suppress(OSError, ValueError):
        st = os.stat(path)
        return st.st_dev, st.st_ino
    return None


def _overlap(targets: list[tuple[Path, str]], others, patterns=()) -> tuple[Path, object, str] | None:
    """The first (target, other, how) where a target (path, "file" or "folder") "is" one of ``others`` (the same
    path, links resolved, or the same file by device and inode), "is inside" it, (a folder) "holds" it, or one of
    the glob ``patterns`` "matches" it; else None. Each path is resolved once."""
    others = list(others)
    keys = [_key(t) for t, _ in targets]
    other_keys = [_key(o) for o in others] if any(keys) else [None] * len(others)
    spelled, real_others = [(p, {os.path.abspath(p), os.path.realpath(p)}) for p in patterns], _real(others)
    for (target, kind), t, key in zip(targets, _real(t for t, _ in targets), keys):
        for other, o, other_key in zip(others, real_others, other_keys):
            if t == o or (key is not None and key == other_key):
                return target, other, "is"
            if t.startswith(o.rstrip(os.sep) + os.sep):
                return target, other, "is inside"
            if kind == "folder" and o.startswith(t.rstrip(os.sep) + os.sep):
                return target, other, "holds"
        for pattern, forms in spelled:
            if any(fnmatch.fnmatchcase(s, p) for s in (t, os.path.abspath(target)) for p in forms):
                return target, pattern, "matches"
    return None


def name_max(folder: str | os.PathLike) -> int:
    """The longest file name (bytes) the file system of ``folder`` allows (255 where unknown)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def check_target(path: str | os.PathLike, kind: str = "file", *, what: str = "--output", force: bool = False,
                 inputs=(), artifacts=(), outputs=(), names=(), parents: bool = False,
                 hint: str = "write the output elsewhere") -> Path:
    """The one decision, before any work, whether ``path`` may be written as a "file" or a "folder" (or into a
    folder by ``names``, each then checked as a file). Whatever ``force`` says, ``UsageError`` (ending with
    ``hint``) where ``path`` is, lies in or holds one of ``inputs`` (or a glob pattern among them would match it),
    ``artifacts`` in use, other ``outputs`` ((option, path) pairs) or the bundled artifacts, or where a file it
    would replace is one of theirs by device and inode; ``OutputError`` for a dangling link, a missing or read-only
    parent (``parents``: the nearest existing one; of an existing folder: itself), a name too long, a folder, pipe
    or device for a file (a trailing separator too), and unless ``force`` an existing file or non-empty folder."""
    text, path, full = os.fspath(path), Path(path), Path(os.path.abspath(path))
    if kind == "file" and text.endswith(tuple(filter(None, (os.sep, os.altsep)))):
        raise OutputError(f"{what} {text}: ends with {text[-1]!r}, which names a folder; give a file name")
    nearest = full.parent
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    size, limit = len(os.fsencode(full.name)), name_max(nearest)
    if size > limit:  # first: a longer name makes every later call fail
        raise OutputError(f"{what} {path}: the name is {size} bytes, longer than the file system allows ({limit}); "
                          f"choose a shorter name")
    said = {"is": "is also an input ({})", "is inside": "is inside the input folder {}",
            "holds": "holds the input {}", "matches": "is matched by the input pattern {}"}
    patterns = [p for p in map(os.fspath, inputs) if glob.has_magic(p) and not os.path.exists(p)]
    inputs = expand_inputs(inputs)  # a pattern: its files now, and any file it would match later (recorded)
    if found := _overlap([(path / name, "file") for name in names] or [(path, kind)], inputs, patterns):
        raise UsageError(f"{what} {found[0]} {said[found[2]].format(found[1])}; {hint}")
    for other in artifacts:
        if _overlap([(path, kind)], [other]):
            raise UsageError(f"{what} {path} is also an input (the artifacts folder {other}); {hint}")
    for option, other in outputs:
        if _overlap([(path, kind)], [other]):
            raise UsageError(f"{what} {path} and {option} {other} overlap; give each output its own place")
    if _overlap([(path, kind)], [_bundled()]):
        raise UsageError(f"{what} {path}: the bundled artifacts ({_bundled()}) are never changed; {hint}")
    if (inputs or artifacts) and path.exists():  # only then: a new target (the common case) lists nothing
        _check_identities(path, names, what, hint, [*inputs, *artifacts])
    _check_place(path, kind, what, force, nearest if parents else full.parent, names)
    return path


def _identities(paths) -> dict[tuple[int, int], Path]:
    """Each file of ``paths`` (of a folder: its own visible entries, what the readers read) by (device, inode),
    links followed."""
    found = {}
    for p in map(Path, paths):
        with contextlib.suppress(OSError):
            for f in sorted(q for q in p.iterdir() if not q.name.startswith(".")) if p.is_dir() else [p]:
                if (key := _key(f)) is not None:
                    found.setdefault(key, f)
    return found


def _check_identities(path: Path, names, what: str, hint: str, others) -> None:
    """``UsageError`` where a file the existing target ``path`` would replace (the folder's ``names``, else all
    its files) is a file of ``others`` (the inputs and artifacts folders), however either is spelled or linked."""
    targets = _identities([path / n for n in names] or [path])
    for other in others if targets else []:
        for key, read in _identities([other]).items():
            if key in targets:
                raise UsageError(f"{what} {targets[key]} is also an input ({read}); {hint}")


def _check_place(path: Path, kind: str, what: str, force: bool, parent: Path, names=()) -> None:
    """``check_target``'s checks of the place: ``parent`` must exist and be writable, or where ``path`` is an
    existing folder (its files are staged inside it) only ``path``; no file written may be a folder, a pipe or a
    device (links followed), nor exist unless ``force``."""
    if path.is_symlink() and not path.exists():
        raise OutputError(f"{what} {path}: a link to {os.readlink(path)}, which does not exist; remove the link "
                          f"or choose another path")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path}: exists and is not a folder; pass a folder path")
    folder = path if kind == "folder" and path.is_dir() else parent
    if not folder.is_dir():
        what_is = "is not a folder" if folder.exists() else "does not exist"
        raise OutputError(f"{what} {path}: {folder} {what_is}; create the folder or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: {folder} is not writable; choose another path")
    if kind == "folder" and path.is_dir() and not force and any(path.iterdir()):
        raise OutputError(f"{what} {path}: the folder exists and is not empty; pass {FORCE} to write into it, "
                          f"or choose a new folder")
    for file in [path / name for name in names] if kind == "folder" else [path]:  # a rename would replace it
        if file.is_dir():
            raise OutputError(f"{what} {file}: is a folder where a file goes; remove it or choose another path")
        if file.exists() and not file.is_file():
            raise OutputError(f"{what} {file}: is not a regular file (a pipe or device?); choose another path")
        if file.exists() and not force:
            raise OutputError(f"{what} {file}: file exists; pass {FORCE} to overwrite it")


@contextlib.contextmanager
def locked(folder: str | os.PathLike) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` for a read-modify-write in it (none where flock is missing)."""
    fd = None
    with contextlib.suppress(ImportError, OSError):
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)
