"""The one decision, before any work, whether a command may write a path (``check_target``): never over an
input, an artifacts folder in use or the bundled one, whatever ``--force`` says; the place itself checked.
``aeflow.files`` then writes it."""

import contextlib
import fnmatch
import glob
import os
from pathlib import Path

from aeflow.checks import expand_inputs
from aeflow.errors import OutputError, UsageError
from aeflow.files import FORCE


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


def _glob_matches(path: str, pattern: str) -> bool:
    """Whether ``glob.glob(pattern)`` would list ``path`` (both absolute): part by part, ``*`` never across a
    separator nor onto a hidden name the pattern does not spell; ``**`` anywhere: fnmatch's wider match."""
    if "**" in pattern:
        return fnmatch.fnmatchcase(path, pattern)
    names, parts = path.split(os.sep), pattern.split(os.sep)
    return len(names) == len(parts) and all(fnmatch.fnmatchcase(n, q) and (not n.startswith(".") or q.startswith("."))
                                            for n, q in zip(names, parts))


def _overlap(targets: list[tuple[Path, str]], others, patterns=()) -> tuple[Path, object, str] | None:
    """The first (target, other, how) where a target (path, "file" or "folder") "is" one of ``others`` (links
    resolved, or by device and inode), "is inside" it, (a folder) "holds" it, or a glob of ``patterns`` "matches"
    it; else None."""
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
            if any(_glob_matches(s, p) for s in (t, os.path.abspath(target)) for p in forms):
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
    """The one decision, before any work, whether ``path`` may be written as a "file" or a "folder" (into which
    only ``names``, if given). Whatever ``force`` says, ``UsageError`` where it is, lies in or holds one of
    ``inputs`` (or a pattern of them matches it), ``artifacts``, other ``outputs`` ((option, path) pairs) or the
    bundled artifacts; ``OutputError`` for a bad place (``parents``: the nearest existing folder is checked) or,
    unless ``force``, an existing file or non-empty folder."""
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
    inputs = expand_inputs(inputs, distinct=False)  # a pattern: its files now, and any it would match later
    if found := _overlap([(path / name, "file") for name in names] or [(path, kind)], inputs, patterns):
        raise UsageError(f"{what} {found[0]} {said[found[2]].format(found[1])}; {hint}")
    if found := _overlap([(path, kind)], artifacts):
        raise UsageError(f"{what} {path} is also an input (the artifacts folder {found[1]}); {hint}")
    for option, other in outputs:
        if _overlap([(path, kind)], [other]):
            raise UsageError(f"{what} {path} and {option} {other} overlap; give each output its own place")
    if _overlap([(path, kind)], [_bundled()]):
        raise UsageError(f"{what} {path}: the bundled artifacts ({_bundled()}) are never changed; {hint}")
    if (inputs or artifacts) and path.exists():  # a file it replaces read under another name (a new one: none)
        targets = _identities([path / n for n in names] or [path])
        for key, read in (_identities([*inputs, *artifacts]) if targets else {}).items():
            if key in targets:
                raise UsageError(f"{what} {targets[key]} is also an input ({read}); {hint}")
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


def _check_place(path: Path, kind: str, what: str, force: bool, parent: Path, names=()) -> None:
    """``check_target``'s checks of the place: ``parent`` (or the existing folder ``path``) a writable folder; no
    file written a folder, pipe or device (links followed), nor existing unless ``force``."""
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
