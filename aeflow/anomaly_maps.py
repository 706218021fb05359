"""Anomaly-map PNGs (``score --maps``, the report): image, reconstruction and squared error side by
side, the error on one fixed "inferno" scale from 0 to ``VMAX`` (above: its top colour), via Pillow."""

import contextlib
import functools
import io
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aeflow.errors import OutputError
from aeflow.files import staged_folder
from aeflow.metrics import above_threshold, normalized_scores
from aeflow.targets import name_max

# matplotlib's "inferno" at 17 evenly spaced points, 8-bit RGB; interpolated linearly in between
INFERNO = np.array([(0, 0, 4), (11, 7, 36), (33, 12, 74), (61, 9, 101), (87, 16, 110), (113, 25, 110), (138, 34, 106),
                    (163, 44, 97), (188, 55, 84), (210, 70, 68), (228, 90, 49), (241, 115, 29), (249, 142, 9),
                    (252, 172, 17), (249, 203, 53), (242, 234, 105), (252, 255, 164)], dtype=np.float64)
VMAX = 0.5   # squared error at the top of the colour scale (|image - reconstruction| = 0.71)
ZOOM = 8     # each image pixel is drawn as ZOOM x ZOOM screen pixels
_PAD, _BAR, _BG, _FG = 12, 16, (255, 255, 255), (20, 20, 20)


def colorize(values: np.ndarray) -> np.ndarray:
    """float [...] on the inferno map over [0, VMAX] (clipped) -> uint8 RGB [..., 3]."""
    t = np.clip(np.asarray(values, dtype=np.float64) / VMAX, 0.0, 1.0) * (len(INFERNO) - 1)
    lo = np.minimum(np.floor(t).astype(np.int64), len(INFERNO) - 2)
    frac = (t - lo)[..., None]
    rgb = INFERNO[lo] * (1 - frac) + INFERNO[lo + 1] * frac
    return np.rint(rgb).astype(np.uint8)


def _grey(image: np.ndarray) -> np.ndarray:
    """float [H, W] in [0, 1] -> uint8 RGB [H, W, 3]."""
    g = np.rint(np.clip(np.asarray(image, dtype=np.float64), 0, 1) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


@functools.lru_cache(maxsize=None)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def panel_png(image: np.ndarray, reconstruction: np.ndarray, amap: np.ndarray, title: list[str]) -> bytes:
    """PNG bytes: ``image``, ``reconstruction`` (float [H, W] in [0, 1]) in grey and ``amap`` (float
    [H, W]) on the inferno scale with a colour bar, zoomed ``ZOOM`` times, under ``title``."""
    h, w = (ZOOM * k for k in np.shape(image)[-2:])
    line_h = 18
    top = _PAD + line_h * len(title) + 4 + line_h          # title lines, then tile captions
    canvas = Image.new("RGB", (_PAD + 3 * (w + _PAD) + _PAD + _BAR + 6 + 48 + _PAD, top + h + _PAD), _BG)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title):
        draw.text((_PAD, _PAD + i * line_h), line, fill=_FG, font=_font(14))
    tiles = [(_grey(image), "image"), (_grey(reconstruction), "reconstruction"),
             (colorize(amap), "squared error per pixel")]
    for k, (rgb, caption) in enumerate(tiles):
        x0 = _PAD + k * (w + _PAD)
        canvas.paste(Image.fromarray(rgb, "RGB").resize((w, h), Image.NEAREST), (x0, top))
        draw.rectangle((x0 - 1, top - 1, x0 + w, top + h), outline=(160, 160, 160))
        draw.text((x0, top - line_h), caption, fill=_FG, font=_font(12))
    x = _PAD + 3 * (w + _PAD)  # the colour bar: VMAX at the top, 0 at the bottom, five labelled ticks
    ramp = colorize(np.linspace(VMAX, 0, h)[:, None].repeat(_BAR, axis=1))
    canvas.paste(Image.fromarray(ramp, "RGB"), (x, top))
    draw.rectangle((x, top, x + _BAR - 1, top + h - 1), outline=_FG)
    for j in range(5):
        y = top + round((h - 1) * (1 - j / 4))
        draw.line((x + _BAR, y, x + _BAR + 4, y), fill=_FG)
        draw.text((x + _BAR + 6, y - 7), f"{VMAX * j / 4:.3g}" + ("+" if j == 4 else ""), fill=_FG, font=_font(12))
    canvas.save(buf := io.BytesIO(), format="PNG")
    return buf.getvalue()


def describe(source: str, index: int, score: float, normalized: float, threshold: float,
             label: bool | None) -> list[str]:
    """A picture's title lines: source, decision, label where known, score, normalised score, threshold."""
    verdict = "ANOMALY (score > threshold)" if above_threshold(score, threshold) else "normal (score <= threshold)"
    known = "" if label is None else f"; label: {'anomaly' if label else 'normal'}"
    return [f"{source}, image {index}: {verdict}{known}",
            f"score {score:.5f} (mean of the map), normalised {normalized:.3f}, threshold {threshold:.5f}"]


def _stem(path: str) -> str:
    """A file name's stem, kept to letters, digits and '._-' ("input" where nothing is left)."""
    stem = path.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    stem = stem.split(".", 1)[0] if "." in stem.lstrip(".") else stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "input"


def file_name(source: str, index: int, position: int | None = None, files: list[str] | None = None) -> str:
    """``[POSITION-]STEM_INDEX.png`` for image ``index`` of ``source``; for a PNG folder's ``files``
    (one per image) ``[POSITION-]PNGSTEM_map.png``, after the image's own file."""
    prefix = "" if position is None else f"{position}-"
    return f"{prefix}{_stem(files[index])}_map.png" if files else f"{prefix}{_stem(source)}_{index:06d}.png"


def naming(sources) -> list[tuple[int | None, list[str] | None]]:
    """Each source's (``position``, ``files``) for ``file_name``: a PNG folder's files name its pictures
    unless two of its stems clash (then STEM_INDEX); positions (from 1) prefix every name when two
    inputs' names would clash (an ``_map`` name never ends like ``_INDEX``), else None."""
    plan, names, stems = [], [], []
    for src in sources:
        files = [str(f) for f in getattr(src, "files", None) or ()] or None
        own = [file_name(src.name, i, None, files) for i in range(len(files or ()))]
        if files is None or len(set(own)) < len(own):
            files = None
            stems.append(_stem(src.name))
        else:
            names += own
        plan.append(files)
    clash = len(set(names)) < len(names) or len(set(stems)) < len(stems)
    return [(k + 1 if clash else None, files) for k, files in enumerate(plan)]


class MapWriter:
    """Pictures (every image, or those above ``threshold``) written while scoring runs into a ``staged_folder``
    entered on ``stack``: published into ``directory`` when it closes normally, removed on any exception or signal."""

    def __init__(self, directory, threshold: float, all_images: bool, sources, stack: contextlib.ExitStack,
                 force: bool = False):
        self.directory, self.threshold, self.all_images = Path(directory), float(threshold), all_images
        self.names: list[str] = []
        limit = name_max(self.directory if self.directory.is_dir() else Path(os.path.abspath(self.directory)).parent)
        self.naming = naming(sources)
        for src, (position, files) in zip(sources, self.naming):
            longest = max((file_name(src.name, i, position, files) for i in range(src.n)), key=len) if files \
                else file_name(src.name, max(src.n - 1, 0), position)
            if len(os.fsencode(longest)) > limit:
                raise OutputError(f"--maps {self.directory}: the pictures of {src.name} would be named "
                                  f"{longest[:30]}..., {len(os.fsencode(longest))} bytes, longer than the file "
                                  f"system allows ({limit}); rename the input or score it without --maps")
        self.staging = stack.enter_context(staged_folder(self.directory, what="--maps", force=force))

    def callback(self, name: str, place=(None, None), labels: np.ndarray | None = None):
        """``score_source``'s ``on_reconstruction`` for input ``name`` (``place``: its ``naming``;
        ``labels``: bool [n] or None)."""

        def on_reconstruction(offset: int, images: np.ndarray, reconstructions: np.ndarray, scores: np.ndarray):
            chosen = np.arange(len(scores)) if self.all_images else \
                np.flatnonzero(above_threshold(scores, self.threshold))
            maps = np.square(images[chosen] - reconstructions[chosen])
            normalized = normalized_scores(scores[chosen], self.threshold)
            for k, i in enumerate(chosen.tolist()):
                label = None if labels is None else bool(labels[offset + i])
                title = describe(name, offset + i, float(scores[i]), float(normalized[k]), self.threshold, label)
                file = file_name(name, offset + i, *place)
                (self.staging / file).write_bytes(panel_png(images[i], reconstructions[i], maps[k], title))
                self.names.append(file)

        return on_reconstruction
