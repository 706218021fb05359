"""What the commands show on a terminal: progress bars on stderr (a terminal, not ``quiet``) and plain-text tables."""

import contextlib
import sys
from types import SimpleNamespace
from typing import Container, Iterator

import click


@contextlib.contextmanager
def progress_bar(length: int, label: str, quiet: bool = False) -> Iterator[object]:
    """A ``click.progressbar`` of ``length`` steps on stderr, or a silent stand-in: call ``bar.update(steps, item)``;
    ``item`` (text: a running loss), if any, shows after the bar."""
    if quiet or not sys.stderr.isatty():
        yield SimpleNamespace(update=lambda n, current_item=None: None)
        return
    with click.progressbar(length=length, label=label, file=sys.stderr, item_show_func=lambda item: item,
                           show_eta=True) as bar:
        yield bar


def text_table(rows: list[list[str]], right: Container[int] = (), rule_before_last: bool = False) -> list[str]:
    """Lines of a plain-text table of string cells (the first row: the headings), columns two spaces apart,
    left-aligned but the column indexes in ``right``; a rule of dashes above the last row with ``rule_before_last``."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    return lines[:-1] + ["  ".join("-" * w for w in widths), lines[-1]] if rule_before_last else lines
