"""onnxruntime's IOBinding: per-thread buffers where the provider computes, reused between batches;
uint8 converted on the device by ``PREP`` (Cast, Div by 255 in float32: bit for bit ``to_float32``);
a CUDA graph replayed for full batches, one thread at a time. The scorer uses it on CUDA only."""

import struct
import threading

import numpy as np
import onnxruntime as ort

from aeflow.runtime.providers import CUDA, create_session, provider_of

FLOAT, UINT8, _CACHED = 1, 2, 4  # ONNX TensorProto element types; buffer sets kept per thread


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


def _msg(field: int, payload: bytes | str) -> bytes:
    payload = payload.encode() if isinstance(payload, str) else payload
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _value_info(name: str, elem: int, dims) -> bytes:
    shape = b"".join(_msg(1, _int(1, d) if isinstance(d, int) else _msg(2, d)) for d in dims)
    return _msg(1, name) + _msg(2, _msg(1, _int(1, elem) + _msg(2, shape)))


def tiny_model(nodes, inputs, outputs, scalars=(), opset: int = 17) -> bytes:
    """A serialized ONNX model (IR 8) without the onnx package. ``nodes``: (op, [inputs], [outputs],
    {attribute: int}); ``inputs``/``outputs``: (name, element type, dims); ``scalars``: (name, float)."""
    graph = b"".join(_msg(1, b"".join(_msg(1, i) for i in ins) + b"".join(_msg(2, o) for o in outs)
                          + _msg(4, op) + b"".join(_msg(5, _msg(1, k) + _int(3, v) + _int(20, 2))
                                                    for k, v in attrs.items()))
                     for op, ins, outs, attrs in nodes)
    graph += _msg(2, "aeflow") + b"".join(_msg(5, _int(2, FLOAT) + _msg(8, name) + _msg(9, struct.pack("<f", v)))
                                          for name, v in scalars)
    graph += b"".join(_msg(11, _value_info(*i)) for i in inputs) + b"".join(_msg(12, _value_info(*o)) for o in outputs)
    return _int(1, 8) + _msg(7, graph) + _msg(8, _msg(1, "") + _int(2, opset))


DIMS = ("N", "C", "H", "W")
# uint8 "pixels" -> float32 "images" = float32(pixels) / float32(255), "brightest" = max(images)
PREP = tiny_model([("Cast", ["pixels"], ["cast"], {"to": FLOAT}), ("Div", ["cast", "c255"], ["images"], {}),
                   ("ReduceMax", ["images"], ["brightest"], {"keepdims": 0})],
                  [("pixels", UINT8, DIMS)], [("images", FLOAT, DIMS), ("brightest", FLOAT, ())], [("c255", 255.0)])


def device_of(session) -> str:
    """The IOBinding device name of the provider that runs ``session``: "cuda" or "cpu"."""
    return "cuda" if provider_of(session) == CUDA else "cpu"


def _zeros(shape, dtype, device: str) -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, device)


class _Buffers:
    """Buffers and bindings for one input shape and dtype on ``device``: input, float32 images and
    every output; ``share``: a set whose images, outputs and binding this one reuses."""

    def __init__(self, session, prep, shape: tuple, dtype, device: str, share: "_Buffers | None" = None):
        if share is not None:
            self.images, self.outputs, self.binding = share.images, share.outputs, share.binding
        else:
            self.images, self.binding = _zeros(shape, np.float32, device), session.io_binding()
            self.binding.bind_ortvalue_input(session.get_inputs()[0].name, self.images)
            self.outputs = {o.name: _zeros([d if isinstance(d, int) else shape[0] for d in o.shape], np.float32, device)
                            for o in session.get_outputs()}  # symbolic dims (N) take the batch's length
            for name, value in self.outputs.items():
                self.binding.bind_ortvalue_output(name, value)
        self.input, self.prep, self.values = self.images, None, self.outputs
        if np.dtype(dtype) == np.uint8:
            self.input, self.prep = _zeros(shape, np.uint8, device), prep.io_binding()
            self.values = self.outputs | {"brightest": _zeros([], np.float32, device)}
            self.prep.bind_ortvalue_input("pixels", self.input)
            self.prep.bind_ortvalue_output("images", self.images)
            self.prep.bind_ortvalue_output("brightest", self.values["brightest"])


class Bound:
    """``session`` (one input; float32 outputs) through IOBinding with per-thread buffers; ``uint8``: via ``PREP``;
    ``graph``: a ``cuda_graph=True`` session replayed for ``graph_batch`` rows (if that fails, ``graph_error``)."""

    def __init__(self, session, uint8: bool = False, graph=None, graph_batch: int = 0, threads: int | None = None):
        self.session, self.device = session, device_of(session)
        self.prep = create_session(PREP, self.device, threads) if uint8 else None
        self._graph, self._graph_batch = graph, graph_batch
        self._graph_lock, self._graph_buffers, self.graph_error = threading.Lock(), {}, None
        self._local = threading.local()

    def _buffers(self, shape: tuple, dtype) -> _Buffers:
        cache = self._local.__dict__.setdefault("sets", {})
        key = (shape, np.dtype(dtype).str)
        if (buffers := cache.pop(key, None)) is None:  # reinserted below: least recently used first
            if len(cache) >= _CACHED:
                del cache[next(iter(cache))]
            buffers = _Buffers(self.session, self.prep, shape, dtype, self.device)
        cache[key] = buffers
        return buffers

    def run(self, x: np.ndarray, outputs=None) -> list[np.ndarray]:
        """The named ``outputs`` (None: all; "brightest" with uint8 input) for ``x``, new host arrays."""
        names = outputs or [o.name for o in self.session.get_outputs()]
        if self._graph is not None and len(x) == self._graph_batch and self._graph_lock.acquire(blocking=False):
            try:  # the CUDA-graph session on fixed buffers (one set per dtype, sharing images and outputs)
                key = np.dtype(x.dtype).str
                if key not in self._graph_buffers:
                    first = next(iter(self._graph_buffers.values()), None)
                    self._graph_buffers[key] = _Buffers(self._graph, self.prep, x.shape, x.dtype, self.device, first)
                return self._run(self._graph, self._graph_buffers[key], x, names)
            except Exception as e:  # onnxruntime could not capture or replay: no replay from now on
                self._graph, self.graph_error = None, f"{type(e).__name__}: {str(e)[:300]}"
            finally:
                self._graph_lock.release()
        return self._run(self.session, self._buffers(x.shape, x.dtype), x, names)

    def _run(self, session, buffers: _Buffers, x: np.ndarray, names) -> list[np.ndarray]:
        buffers.input.update_inplace(np.ascontiguousarray(x))
        if buffers.prep is not None:
            self.prep.run_with_iobinding(buffers.prep)
        session.run_with_iobinding(buffers.binding)
        got = [buffers.values[n].numpy() for n in names]
        # a CPU OrtValue's numpy() is a view of the reused buffer; a CUDA one's is a copy already
        return [g.copy() for g in got] if self.device == "cpu" else got


def run_graph(session, name: str, x: np.ndarray) -> list[np.ndarray]:
    """Every output of ``session`` for input ``name`` = ``x``: IOBinding on CUDA, else ``session.run``."""
    if provider_of(session) != CUDA:
        return session.run(None, {name: x})
    # two threads may both build one here; either serves
    return (session.__dict__.get("_aeflow_bound") or session.__dict__.setdefault("_aeflow_bound", Bound(session))).run(x)
