"""Tools that measure the runtime (evaluation, the HTML report, verify, the benchmark): on top of
``aeflow.runtime``, matplotlib and torch loaded lazily; the runtime never imports them."""


def text_table(rows: list[list[str]], right: tuple[int, ...] = ()) -> list[str]:
    """Lines of a plain-text table of string cells, columns two spaces apart, left-aligned but the
    column indexes in ``right``."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]
