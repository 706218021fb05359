"""Progress bars on stderr, shown only when stderr is a terminal and not ``quiet``."""

from __future__ import annotations

import contextlib
import sys
from types import SimpleNamespace
from typing import Callable, Iterator

import click


@contextlib.contextmanager
def progress_bar(length: int, label: str, quiet: bool = False,
                 show: Callable[[object], str | None] | None = None) -> Iterator[object]:
    """A ``click.progressbar`` of ``length`` steps on stderr, or a silent stand-in: call
    ``bar.update(steps, item)``; ``show(item)`` gives the text after the bar (a running loss)."""
    if quiet or not sys.stderr.isatty():
        yield SimpleNamespace(update=lambda n, current_item=None: None)
        return
    with click.progressbar(length=length, label=label, file=sys.stderr, item_show_func=show,
                           show_eta=True) as bar:
        yield bar
