"""Image arrays: the accepted layouts and dtypes, value checks, and conversion to float32 [b, 1, H, W].

Images are greyscale, H x W pixels (height x width; ``image_shape=(H, W)``, default (28, 28), the
run's size). Accepted batches: shape ``[N, 1, H, W]``, ``[N, H, W]``, ``[N, H, W, 1]`` or
``[N, H*W]`` with N >= 1, dtype uint8 (0..255, scaled by 1/255) or float16/32/64 in [0, 1]. A
single ``[H, W]`` image is refused (add the batch dimension, ``x[None]``), so that a mislaid array
never passes as one image. Values on a likely wrong scale (``scale_problem``) are accepted, but
the scorer warns (``aeflow.errors.ScaleWarning``).
"""

from __future__ import annotations

import numpy as np

from aeflow.errors import InputError

SIDE = 28  # the homework's images, 28x28: the default size
DEFAULT_SHAPE = (SIDE, SIDE)
SIDES = (4, 4096)  # the smallest and largest side an image size taken from the data may have
_RANGE_SLACK = 1e-6  # float32 rounding of x / 255 may land a hair beyond 1
_SHOW = 5  # image indices named in an error message


def size(shape) -> str:
    """(H, W) -> 'HxW' (height x width), as messages write image sizes."""
    return "x".join(str(int(d)) for d in shape)


def accepted(image_shape=DEFAULT_SHAPE) -> str:
    """The accepted layouts for ``image_shape`` (H, W), for messages."""
    h, w = image_shape
    return f"[N, 1, {h}, {w}], [N, {h}, {w}] or [N, {h * w}] (uint8 0..255 or float in [0, 1])"


def check_image_shape(image_shape, name: str) -> tuple[int, int]:
    """``image_shape`` as a tuple (H, W) of ints, or a one-line ``InputError`` naming ``name`` when
    it is not two sides within ``SIDES`` (4..4096 pixels)."""
    hw = tuple(int(d) for d in image_shape)
    if len(hw) != 2 or not all(SIDES[0] <= d <= SIDES[1] for d in hw):
        raise InputError(f"{name}: images of {size(hw)} pixels; aeflow reads greyscale images of "
                         f"{SIDES[0]} to {SIDES[1]} pixels a side")
    return hw


def _dtype_problem(dtype: np.dtype) -> str | None:
    if dtype == np.uint8 or dtype.kind == "f":
        return None
    kinds = {"b": "dtype bool (a mask?)", "c": f"complex values (dtype {dtype})", "O": "dtype object (Python objects)",
             "U": f"strings (dtype {dtype})", "S": f"strings (dtype {dtype})"}
    if dtype.kind in "iu":
        return f"dtype {dtype}: pass uint8 (0..255) or float32 in [0, 1], e.g. x.astype(np.uint8) for 0..255 values"
    return f"{kinds.get(dtype.kind, f'dtype {dtype}')}: pass real uint8 (0..255) or float32 in [0, 1] pixels"


def _image_sizes(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The (H, W) that a batch of ``shape`` holds, or None for flat or other layouts."""
    if len(shape) == 4 and (shape[1] == 1 or shape[3] == 1):
        return shape[2:] if shape[1] == 1 else shape[1:3]
    return shape[1:] if len(shape) == 3 else None


def _shape_problem(shape: tuple[int, ...], image_shape) -> str | None:
    h, w = image_shape
    if len(shape) >= 2 and tuple(shape[1:]) in {(1, h, w), (h, w), (h, w, 1), (h * w,)}:
        return None if shape[0] > 0 else f"no images (shape {shape})"
    if shape == (h, w):
        hint = f"a single {size(image_shape)} image: add a batch dimension, x[None] (shape [1, {h}, {w}])"
    elif len(shape) <= 1:
        k = shape[0] if shape else 1
        hint = (f"a 1-D array of {k} values: reshape flat pixels with x.reshape(-1, {h}, {w})" if k and k % (h * w) == 0
                else f"a {'scalar' if not shape else '1-D array'}: pass a batch of {size(image_shape)} images")
    elif len(shape) == 4 and (shape[1] in (3, 4) or shape[3] in (3, 4)):
        hint = "colour images: aeflow scores greyscale, convert them to one channel"
    elif _image_sizes(shape):
        hint = f"images of {size(_image_sizes(shape))} pixels, this run's are {size(image_shape)}: resize them"
    elif len(shape) == 2:
        hint = f"rows of {shape[1]} values: each image needs {h * w} pixels ({size(image_shape)})"
    else:
        hint = f"not a batch of {size(image_shape)} greyscale images"
    return f"shape {shape} ({hint}); expected {accepted(image_shape)}"


def check_layout(shape: tuple[int, ...], dtype: np.dtype, name: str, image_shape=DEFAULT_SHAPE) -> tuple[int, int]:
    """The (H, W) of a batch of ``shape``/``dtype`` (see the module docstring) of ``image_shape``
    images, or of the size its shape says when ``image_shape`` is None ([N, 1, H, W], [N, H, W] or
    [N, H, W, 1]; a flat [N, D] batch does not say it); one-line ``InputError`` naming ``name``
    for another dtype, layout or size."""
    shape = tuple(int(d) for d in shape)
    problem = _dtype_problem(np.dtype(dtype))
    if problem is None and image_shape is None:
        if _image_sizes(shape) is None:
            raise InputError(f"{name}: shape {shape} does not say the image size; reshape it to [N, H, W] "
                             f"(flat rows of H*W pixels need the size given, image_shape=(H, W))")
        image_shape = _image_sizes(shape)
    image_shape = check_image_shape(image_shape or DEFAULT_SHAPE, name)
    if problem := problem or _shape_problem(shape, image_shape):
        raise InputError(f"{name}: {problem}")
    return image_shape


def _indices(bad: np.ndarray, offset: int) -> str:
    shown = ", ".join(str(int(i) + offset) for i in bad[:_SHOW])
    more = f" and {bad.size - _SHOW} more ({bad.size} in all)" if bad.size > _SHOW else ""
    return f"image{'s' if bad.size > 1 else ''} {shown}{more}"


def _range_hint(lo: float, hi: float) -> str:
    if lo >= 0 and 1 < hi <= 255:
        return "they look like 0..255: pass uint8 or divide by 255"
    if lo >= -1 - _RANGE_SLACK and hi <= 1 + _RANGE_SLACK:
        return "they look like [-1, 1] normalisation: pass (x + 1) / 2"
    if -5 < lo < 0 and 1 < hi < 10:
        return "they look standardised (mean/std): undo it (for MNIST x * 0.3081 + 0.1307)"
    return "rescale the pixels to [0, 1]"


def check_values(x: np.ndarray, name: str, offset: int = 0) -> None:
    """Raise ``InputError`` when float images ``x`` [b, ...] hold NaN or Inf (naming the image
    indices, counted from ``offset``) or values outside [0, 1] (naming the range found and the
    rescaling that fits)."""
    lo, hi = float(x.min()), float(x.max())
    if np.isfinite(lo) and np.isfinite(hi) and lo >= -_RANGE_SLACK and hi <= 1 + _RANGE_SLACK:
        return
    flat = x.reshape(len(x), -1)
    bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if bad.size:
        raise InputError(f"{name}: NaN or Inf in {_indices(bad, offset)}; fix or drop those images")
    first = int(np.flatnonzero(((flat < -_RANGE_SLACK) | (flat > 1 + _RANGE_SLACK)).any(axis=1))[0]) + offset
    raise InputError(f"{name}: pixel values span {lo:g}..{hi:g} (first at image {first}), expected [0, 1]; "
                     f"{_range_hint(lo, hi)}")


def scale_problem(images: np.ndarray, dtype: np.dtype, name: str, offset: int = 0) -> str | None:
    """A one-line warning when a converted batch (float32 [b, 1, H, W] in [0, 1], converted from
    ``dtype``) is on a likely wrong scale, else None: its brightest pixel is above 0 but at most
    1/255, which a uint8 batch holding only 0 and 1 (a binarised mask) or floats divided by 255
    twice give. Such images score as blank ones and anomalies among them go unnoticed."""
    hi = float(images.max()) if images.size else 0.0
    if not 0.0 < hi <= 1.0 / 255.0 + _RANGE_SLACK:
        return None
    where = f"images {offset}..{offset + len(images) - 1}"
    if np.dtype(dtype) == np.uint8:
        return (f"{name}: uint8 pixels hold only 0 and 1 in {where} (a binarised mask?); uint8 is read as "
                f"0..255, so these score as blank images - pass x * 255 if 1 means white")
    return (f"{name}: the brightest pixel is {hi:.3g} in {where} (divided by 255 twice?); these score as "
            f"blank images - pass x * 255 if so")


def to_float32(batch: np.ndarray, name: str, offset: int = 0, out: np.ndarray | None = None,
               image_shape=DEFAULT_SHAPE) -> np.ndarray:
    """A batch [b, ...] of an accepted layout of ``image_shape`` (H, W) images as C-contiguous
    float32 [b, 1, H, W] in [0, 1] (values checked). uint8 is divided by 255 (as in training);
    float32 C-contiguous input is returned without a copy; everything else is converted into
    ``out`` (float32 [>= b, 1, H, W]) when given, else into a new array."""
    b, (h, w) = len(batch), image_shape
    flat = batch.reshape(b, h * w)
    if batch.dtype == np.float32 and flat.flags.c_contiguous:
        result = flat.reshape(b, 1, h, w)
        check_values(result, name, offset)
        return result
    dest = out[:b] if out is not None else np.empty((b, 1, h, w), dtype=np.float32)
    if batch.dtype == np.uint8:
        np.divide(flat, np.float32(255.0), out=dest.reshape(b, h * w), dtype=np.float32)
        return dest
    np.copyto(dest.reshape(b, h * w), flat, casting="unsafe")
    check_values(dest, name, offset)
    return dest
