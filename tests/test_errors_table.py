"""Every failure a user can meet, through the real CLI: exit code, one line naming the problem, no
traceback, no file left behind; and the Python API raising an ``AeflowError`` with the same line.

Each case builds its files in ``tmp_path`` and returns the CLI arguments. ``api`` (optional) does
the same thing through the Python API; its ``AeflowError`` message must equal the CLI's line.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import assert_one_line_error, edit_metadata, invoke_cli, run_cli, wait_for, write_idx
from pngdata import SIGNATURE

from aeflow.cli import cli_message
from aeflow.errors import AeflowError
from aeflow.files import sha256_file
from aeflow.runtime.artifacts import bundled_dir
from aeflow.runtime.inputs import open_source
from aeflow.runtime.outputs import check_output_path
from aeflow.runtime.providers import cuda_missing
from aeflow.runtime.sampler import FlowSampler
from aeflow.runtime.scorer import AnomalyScorer

ARTIFACT_FILES = ("ae.onnx", "ae.int8.onnx", "threshold.json", "flow.onnx", "flow_sampler.onnx", "flow.json", "golden.npz")
CPU = ["--device", "cpu"]


@dataclass
class Case:
    name: str
    setup: Callable[[Path], list[str]]  # builds files in tmp_path, returns the CLI arguments
    code: int
    word: str  # must be in the error line
    api: Callable[[Path], object] | None = None  # the same through the Python API
    skip: Callable[[], str | None] | None = None


# ---------------------------------------------------------------- builders

def images(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def save_npy(tmp: Path, array: np.ndarray, name: str = "x.npy") -> Path:
    p = tmp / name
    np.save(p, array, allow_pickle=array.dtype == object)
    return p


def cut(path: Path, drop: int) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - drop])
    return path


def flip(path: Path, start: int, step: int, stop_from_end: int = 0) -> Path:
    data = bytearray(path.read_bytes())
    for i in range(start, len(data) - stop_from_end, step):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


def png_bytes(width: int, height: int, colour: int = 0) -> bytes:
    """A complete, CRC-valid PNG of the given size and colour type (8-bit)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    raw = b"".join(b"\x00" + bytes(width * channels) for _ in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def artifacts(tmp: Path) -> Path:
    """A copy of the bundled graphs and JSON files, to damage."""
    d = tmp / "art"
    d.mkdir(exist_ok=True)
    for name in ARTIFACT_FILES:
        (d / name).write_bytes((bundled_dir() / name).read_bytes())
    return d


def edit_json(path: Path, **changes) -> None:
    """Top-level changes, resealed (content_sha256) so they reach the field checks; NaN is written
    as the NaN literal, which the contract refuses."""
    edit_metadata(path, **changes)


def fix_sha(d: Path, graph: str = "ae.onnx", meta: str = "threshold.json") -> None:
    edit_json(d / meta, sha256=sha256_file(d / graph))


def rename_graph_io(path: Path, renames: dict[str, str]) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(path))
    g = model.graph
    for v in [*g.input, *g.output]:
        v.name = renames.get(v.name, v.name)
    for node in g.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    onnx.save(model, str(path))


@lru_cache(maxsize=1)
def cpu_scorer() -> AnomalyScorer:
    return AnomalyScorer(device="cpu")


def api_score(path: Path):
    with open_source(path) as src:
        return cpu_scorer().score_source(src)


# ---------------------------------------------------------------- score inputs

def score_npy(array: np.ndarray, name: str = "x.npy"):
    def setup(tmp):
        return ["score", str(save_npy(tmp, array, name)), *CPU]
    return setup


def score_file(build: Callable[[Path], Path]):
    def setup(tmp):
        return ["score", str(build(tmp)), *CPU]
    return setup


def api_on_input(tmp: Path):
    return api_score(Path(INPUT_OF[tmp]))


INPUT_OF: dict[Path, str] = {}  # tmp_path -> the input file a case built (for its API twin)


def with_nan(value) -> np.ndarray:
    x = images(10).astype(np.float32) / 255
    x[3, 5, 5] = value
    x[7, 0, 0] = value
    return x


def idx_file(tmp: Path, gz: bool = False) -> Path:
    p = tmp / ("x-idx3-ubyte" + (".gz" if gz else ""))
    write_idx(p, images(64), compress=gz)
    return p


def bad_magic_idx(tmp: Path) -> Path:
    p = idx_file(tmp)
    data = bytearray(p.read_bytes())
    data[2:4] = b"\x0d\x03"  # float32 type code
    p.write_bytes(bytes(data))
    return p


def short_header_idx(tmp: Path) -> Path:
    p = tmp / "x-idx3-ubyte"
    p.write_bytes(struct.pack(">HBB3I", 0, 8, 3, 1000, 28, 28) + images(10).tobytes())
    return p


def png_folder(tmp: Path, files: dict[str, bytes]) -> Path:
    d = tmp / "pngs"
    d.mkdir()
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def single_png(tmp: Path, data: bytes) -> Path:
    p = tmp / "a.png"
    p.write_bytes(data)
    return p


def npz(tmp: Path, compressed: bool) -> Path:
    p = tmp / "x.npz"
    (np.savez_compressed if compressed else np.savez)(p, images=images(64))
    return p


INPUT_CASES = [
    Case("shape 32x32", score_npy(np.zeros((4, 32, 32), np.uint8)), 1, "32x32"),
    Case("shape 3 channels", score_npy(np.zeros((4, 3, 28, 28), np.uint8)), 1, "colour"),
    Case("shape 1-D", score_npy(np.zeros(100, np.uint8)), 1, "1-D"),
    Case("shape single image", score_npy(np.zeros((28, 28), np.uint8)), 1, "x[None]"),
    Case("dtype int64", score_npy(np.zeros((4, 28, 28), np.int64)), 1, "int64"),
    Case("dtype bool", score_npy(np.zeros((4, 28, 28), bool)), 1, "bool"),
    Case("dtype complex", score_npy(np.zeros((4, 28, 28), np.complex64)), 1, "complex"),
    Case("dtype object", score_npy(np.full((4, 28, 28), None, dtype=object)), 1, "object"),
    Case("dtype strings", score_npy(np.full((4, 28, 28), "a", dtype="<U3")), 1, "strings"),
    Case("NaN", score_npy(with_nan(np.nan)), 1, "images 3, 7"),
    Case("Inf", score_npy(with_nan(np.inf)), 1, "NaN or Inf"),
    Case("range 0..255 floats", score_npy(images(4).astype(np.float32)), 1, "divide by 255"),
    Case("range [-1, 1]", score_npy(images(4).astype(np.float32) / 127.5 - 1), 1, "(x + 1) / 2"),
    Case("empty array", score_npy(np.zeros((0, 28, 28), np.uint8)), 1, "no images"),
    Case("empty file", score_file(lambda t: (t / "e.npy").write_bytes(b"") or t / "e.npy"), 1, "empty"),
    Case("missing file", score_file(lambda t: t / "nope.npy"), 1, "no such file"),
    Case("empty folder", score_file(lambda t: png_folder(t, {})), 1, "no PNG images"),
    Case("folder of non-images", score_file(lambda t: png_folder(t, {"notes.txt": b"hi"})), 1, "notes.txt"),
    Case("png in folder is wrong size", score_file(lambda t: png_folder(t, {"a.png": png_bytes(32, 32)})), 1,
         "32x32"),
    Case("png wrong size", score_file(lambda t: single_png(t, png_bytes(32, 32))), 1, "resize"),
    Case("png wrong mode", score_file(lambda t: single_png(t, png_bytes(28, 28, colour=2))), 1, "RGB"),
    Case("png corrupted", score_file(lambda t: flip(single_png(t, png_bytes(28, 28)), 40, 7, 12)), 1,
         "corrupted"),
    Case("png not a png", score_file(lambda t: single_png(t, b"GIF89a" + bytes(100))), 1, "not a PNG"),
    Case("npy truncated", score_file(lambda t: cut(save_npy(t, images(64)), 1000)), 1, "truncated"),
    Case("npy corrupted header", score_file(lambda t: flip(save_npy(t, images(4)), 10, 3, 4 * 784)), 1,
         "corrupted"),
    Case("npz truncated", score_file(lambda t: cut(npz(t, True), 300)), 1, "npz"),
    Case("npz corrupted", score_file(lambda t: flip(npz(t, True), 300, 37, 400)), 1, "corrupted"),
    Case("npz stored truncated", score_file(lambda t: cut(npz(t, False), 100)), 1, "truncated"),
    Case("idx truncated", score_file(lambda t: cut(idx_file(t), 100)), 1, "truncated"),
    Case("idx of float32", score_file(bad_magic_idx), 1, "an IDX file of float32 values"),
    Case("idx header promises more", score_file(short_header_idx), 1, "promises 784000"),
    Case("gz truncated", score_file(lambda t: cut(idx_file(t, gz=True), 500)), 1, "truncated"),
    Case("gz corrupted", score_file(lambda t: flip(idx_file(t, gz=True), 100, 50, 20)), 1, "corrupted"),
    Case("unknown format", score_file(lambda t: (t / "a.txt").write_text("hello\n") and t / "a.txt"), 1,
         "unknown format"),
]
for _c in INPUT_CASES:
    _c.api = api_on_input


# ---------------------------------------------------------------- archives and folders (issue 10)

def npy_member(array: np.ndarray, shape: tuple[int, ...] | None = None) -> bytes:
    """The bytes of a .npy file holding ``array``, its header claiming ``shape`` when given."""
    import io

    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": array.dtype.str, "fortran_order": False,
                                             "shape": shape or array.shape})
    return f.getvalue() + array.tobytes()


def zip_of(tmp: Path, members: list[tuple[str, bytes]], name: str = "x.npz") -> Path:
    import warnings
    import zipfile

    p = tmp / name
    with warnings.catch_warnings(), zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as z:
        warnings.simplefilter("ignore")  # "Duplicate name"
        for member, data in members:
            z.writestr(member, data)
    return p


def zip_patch(path: Path, flag: int | None = None, method: int | None = None) -> Path:
    """Set the general-purpose flag bits and/or the compression method of every member, in both
    the local and the central headers."""
    data = bytearray(path.read_bytes())
    for sig, at_flag in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = data.find(sig)
        while i >= 0:
            if flag is not None:
                data[i + at_flag:i + at_flag + 2] = struct.pack("<H", flag)
            if method is not None:
                data[i + at_flag + 2:i + at_flag + 4] = struct.pack("<H", method)
            i = data.find(sig, i + 4)
    path.write_bytes(bytes(data))
    return path


def short_member_npz(tmp: Path) -> Path:
    """images.npy's header promises 100 images, it holds 10; the next member holds plenty of bytes."""
    return zip_of(tmp, [("images.npy", npy_member(images(10), (100, 28, 28))),
                        ("padding.npy", npy_member(images(200)))])


def folder_with(tmp: Path, odd: str) -> Path:
    d = png_folder(tmp, {"a.png": png_bytes(28, 28)})
    if odd == "fifo":
        os.mkfifo(d / "b.png")
    elif odd == "device":
        (d / "b.png").symlink_to("/dev/zero")
    else:
        (d / "b.png").symlink_to(d / "gone.png")
    return d


def lone(tmp: Path, odd: str) -> Path:
    p = tmp / "x.npy"
    if odd == "fifo":
        os.mkfifo(p)
    else:
        p.symlink_to(tmp / "gone.npy")
    return p


def no_fifo() -> str | None:
    return None if hasattr(os, "mkfifo") else "no FIFOs on this system"


ARCHIVE_CASES = [
    Case("npz member shorter than its header", score_file(short_member_npz), 1, "promises 78400 data bytes"),
    Case("npz two members match images", score_file(lambda t: zip_of(t, [("images.npy", npy_member(images(4))),
                                                                        ("b/images.npy", npy_member(images(5)))])),
         1, "ambiguous"),
    Case("npz duplicate member names", score_file(lambda t: zip_of(t, [("images.npy", npy_member(images(4))),
                                                                      ("images.npy", npy_member(images(5)))])),
         1, "2 members match 'images'"),
    Case("npz two label members", score_file(lambda t: zip_of(t, [("images.npy", npy_member(images(4))),
                                                                 ("is_anomaly.npy", npy_member(np.zeros(4, bool))),
                                                                 ("l/is_anomaly.npy", npy_member(np.ones(4, bool)))])),
         1, "match 'is_anomaly'"),
    Case("npz encrypted member", score_file(lambda t: zip_patch(npz(t, False), flag=1)), 1, "encrypted"),
    Case("npz unknown compression", score_file(lambda t: zip_patch(npz(t, False), method=98)), 1,
         "compression method 98"),
    Case("folder holds a FIFO", score_file(lambda t: folder_with(t, "fifo")), 1, "b.png is a FIFO", skip=no_fifo),
    Case("folder holds a link to a device", score_file(lambda t: folder_with(t, "device")), 1,
         "b.png is a character device (through a link)"),
    Case("folder holds a dangling link", score_file(lambda t: folder_with(t, "dangling")), 1,
         "b.png is a dangling link"),
    Case("input is a FIFO", score_file(lambda t: lone(t, "fifo")), 1, "is a FIFO", skip=no_fifo),
    Case("input is a dangling link", score_file(lambda t: lone(t, "dangling")), 1, "dangling link"),
]
for _c in ARCHIVE_CASES:
    _c.api = api_on_input


# ---------------------------------------------------------------- artifacts

def damaged(damage: Callable[[Path], None], command: str = "score", extra: tuple[str, ...] = ()):
    def setup(tmp):
        d = artifacts(tmp)
        damage(d)
        if command == "score":
            return ["score", str(save_npy(tmp, images(4))), "--artifacts", str(d), *CPU, *extra]
        return ["sample", "-n", "10", "--artifacts", str(d), *CPU, *extra]
    return setup


def api_scorer(tmp: Path):
    return AnomalyScorer(tmp / "art" if (tmp / "art").exists() else tmp / "no-art", device="cpu")


def api_sampler(tmp: Path):
    return FlowSampler(tmp / "art" if (tmp / "art").exists() else tmp / "no-art", device="cpu")


def truncate_onnx(d: Path) -> None:
    cut(d / "ae.onnx", (d / "ae.onnx").stat().st_size // 2)
    fix_sha(d)


def garbage_onnx(d: Path) -> None:
    (d / "ae.onnx").write_bytes(np.random.default_rng(1).bytes(5000))
    fix_sha(d)


def renamed_onnx(d: Path) -> None:
    rename_graph_io(d / "ae.onnx", {"images": "pixels", "score": "anomaly"})
    fix_sha(d)


def remove(name: str):
    return lambda d: (d / name).unlink()


def only_the_other_model(*names: str, checkpoint: str | None = None):
    """A run folder holding one model's export (``names`` removed), with ``checkpoint`` of the other if given."""
    def damage(d: Path) -> None:
        for name in names:
            (d / name).unlink()
        if checkpoint:
            (d / checkpoint).write_bytes(b"trained, not exported")
    return damage


def set_json(name: str, **changes):
    return lambda d: edit_json(d / name, **changes)


def write(name: str, text: str):
    return lambda d: (d / name).write_text(text)


def tamper(meta: str):
    """A sha256 in the JSON that does not match the graph (an edited graph or a swapped JSON)."""
    return lambda d: edit_json(d / meta, sha256="0" * 64)


def missing_folder(tmp):
    return ["score", str(save_npy(tmp, images(4))), "--artifacts", str(tmp / "no-art"), *CPU]


ARTIFACT_CASES = [
    Case("artifacts folder missing", missing_folder, 1, "does not exist", api_scorer),
    Case("threshold.json missing", damaged(remove("threshold.json")), 1, "threshold.json: not found", api_scorer),
    Case("ae.onnx missing", damaged(remove("ae.onnx")), 1, "ae.onnx: not found", api_scorer),
    Case("ae.onnx truncated", damaged(truncate_onnx), 1, "cannot load", api_scorer),
    Case("ae.onnx corrupted", damaged(garbage_onnx), 1, "cannot load", api_scorer),
    Case("ae.onnx other inputs/outputs", damaged(renamed_onnx), 1, "inputs ['pixels']", api_scorer),
    Case("threshold.json malformed", damaged(write("threshold.json", '{"schema_version": 1,')), 1, "malformed JSON",
         api_scorer),
    Case("threshold.json not an object", damaged(write("threshold.json", "[1, 2]")), 1, "JSON object", api_scorer),
    Case("threshold.json schema 99", damaged(set_json("threshold.json", schema_version=99)), 1,
         "schema_version 99", api_scorer),
    Case("threshold NaN", damaged(set_json("threshold.json", threshold=float("nan"))), 1, "NaN is not a JSON number",
         api_scorer),
    Case("threshold negative", damaged(set_json("threshold.json", threshold=-1)), 1, "found -1", api_scorer),
    Case("threshold a string", damaged(set_json("threshold.json", threshold="0.1")), 1, "must be a number",
         api_scorer),
    Case("ae.onnx sha mismatch", damaged(tamper("threshold.json")), 1, "--no-verify", api_scorer),
    Case("onnx_file escapes folder", damaged(set_json("threshold.json", onnx_file="../ae.onnx")), 1,
         "field 'onnx_file' must be \"ae.onnx\"", api_scorer),
    Case("flow.json missing", damaged(remove("flow.json"), "sample"), 1, "flow.json: not found", api_sampler),
    # a run of one model: export again changes nothing, so it was a circular hint there
    Case("flow-only run", damaged(only_the_other_model("threshold.json", "ae.onnx", "ae.int8.onnx")), 1,
         "art holds only the flow and no ae.pt: run 'aeflow train ae -o", api_scorer),
    Case("detector-only run", damaged(only_the_other_model("flow.json", "flow.onnx", "flow_sampler.onnx"), "sample"),
         1, "art holds only the detector and no flow.pt: run 'aeflow train flow -o", api_sampler),
    Case("flow-only run beside ae.pt", damaged(only_the_other_model("threshold.json", "ae.onnx", checkpoint="ae.pt")),
         1, "threshold.json: not found; run 'aeflow export -o", api_scorer),
    Case("flow.json malformed", damaged(write("flow.json", "{nope"), "sample"), 1, "malformed JSON", api_sampler),
    Case("flow.json schema 99", damaged(set_json("flow.json", schema_version=99), "sample"), 1, "schema_version",
         api_sampler),
    Case("flow.json without W", damaged(set_json("flow.json", W=None), "sample"), 1, "W", api_sampler),
    Case("flow.json bad components", damaged(set_json("flow.json", components={"mu": [0]}), "sample"), 1,
         "components", api_sampler),
    Case("flow.onnx sha mismatch", damaged(tamper("flow.json"), "sample"), 1, "sha256", api_sampler),
    Case("flow.onnx is the autoencoder",
         damaged(lambda d: ((d / "flow.onnx").write_bytes((d / "ae.onnx").read_bytes()),
                            fix_sha(d, "flow.onnx", "flow.json")), "sample"), 1, "inputs ['images']", api_sampler),
]


# ---------------------------------------------------------------- checkpoints (torch)

def crafted_checkpoint(tmp: Path) -> list[str]:
    pytest.importorskip("torch")
    import pickle

    ck = tmp / "ck"
    ck.mkdir()

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'pwned'}",))

    with open(ck / "ae.pt", "wb") as f:
        pickle.dump({"kind": "autoencoder", "state_dict": Evil()}, f, protocol=2)
    (ck / "flow.pt").write_bytes((ck / "ae.pt").read_bytes())
    (tmp / "out").mkdir()
    return ["export", "--checkpoints", str(ck), "-o", str(tmp / "out"), "--no-eval"]


def missing_checkpoints(tmp: Path) -> list[str]:
    pytest.importorskip("torch")
    (tmp / "out").mkdir()
    return ["export", "--checkpoints", str(tmp / "none"), "-o", str(tmp / "out"), "--no-eval"]


def api_checkpoint(tmp: Path):
    from aeflow.train.checkpoint import load_checkpoint

    return load_checkpoint(tmp / "ck" / "ae.pt", "autoencoder")


CHECKPOINT_CASES = [
    Case("crafted checkpoint", crafted_checkpoint, 1, "refused", api_checkpoint),
    Case("checkpoints missing", missing_checkpoints, 1, "checkpoints not found"),
]


def edited_checkpoint(kind: str, edit: Callable[[dict], None]):
    """A copy of the bundled ae.pt/flow.pt (kind "ae"/"flow") alone, with ``edit`` applied to its
    dict, exported with 'aeflow export --checkpoints'."""
    def setup(tmp: Path) -> list[str]:
        torch = pytest.importorskip("torch")
        ck = tmp / "ck"
        ck.mkdir()
        path = ck / f"{kind}.pt"
        path.write_bytes((bundled_dir() / path.name).read_bytes())
        payload = torch.load(path, weights_only=True)
        edit(payload)
        torch.save(payload, path)
        (tmp / "out").mkdir()
        return ["export", "--checkpoints", str(ck), "-o", str(tmp / "out"), "--no-eval"]
    return setup


def api_load(kind: str):
    def api(tmp: Path):
        from aeflow.export.exporter import load_autoencoder, load_flow

        return (load_autoencoder if kind == "ae" else load_flow)(tmp / "ck" / f"{kind}.pt")
    return api


def nan_weight(p: dict) -> None:
    key = next(iter(p["state_dict"]))
    p["state_dict"][key] = p["state_dict"][key].clone().fill_(float("nan"))


def wrong_shape(p: dict) -> None:
    key = next(iter(p["state_dict"]))
    p["state_dict"][key] = p["state_dict"][key][:1].clone()


def ck_case(label: str, kind: str, edit: Callable[[dict], None], word: str) -> Case:
    return Case(label, edited_checkpoint(kind, edit), 1, word, api_load(kind))


CHECKPOINT_FIELD_CASES = [
    ck_case("ae.pt without config", "ae", lambda p: p.pop("config"), "'config' or 'history' is missing"),
    ck_case("ae.pt without state_dict", "ae", lambda p: p.pop("state_dict"), "'state_dict' must hold"),
    ck_case("ae.pt empty state_dict", "ae", lambda p: p.update(state_dict={}), "'state_dict' must hold"),
    ck_case("ae.pt state_dict a list", "ae", lambda p: p.update(state_dict=[1, 2]), "'state_dict' must hold"),
    ck_case("ae.pt state_dict entry not a tensor", "ae",
            lambda p: p["state_dict"].update({"encoder.fc1.weight": [1.0]}), "'state_dict' must hold"),
    ck_case("ae.pt NaN weights", "ae", nan_weight, "NaN or Inf"),
    ck_case("ae.pt weight of the wrong shape", "ae", wrong_shape, "does not fit the model"),
    ck_case("ae.pt missing weight", "ae", lambda p: p["state_dict"].pop(next(iter(p["state_dict"]))),
            "does not fit the model"),
    ck_case("ae.pt image_shape not two sides", "ae", lambda p: p["config"].update(image_shape=[28]),
            "config describes no model"),
    ck_case("ae.pt config without seed", "ae", lambda p: p["config"].pop("seed"), "field 'seed' is missing"),
    ck_case("ae.pt config a list", "ae", lambda p: p.update(config=[1]), "'config' or 'history' is missing"),
    ck_case("ae.pt history empty", "ae", lambda p: p["history"].update(epoch_loss=[]), "'history' is missing or invalid"),
    ck_case("ae.pt of another kind", "ae", lambda p: p.update(kind="flow"), "kind 'flow'"),
    ck_case("flow.pt huge n_components", "flow", lambda p: p["config"].update(n_components=10**9),
            "does not fit the model"),
    ck_case("flow.pt n_components disagrees", "flow", lambda p: p["config"].update(n_components=7),
            "does not fit the model"),
    ck_case("flow.pt unknown config field", "flow", lambda p: p["config"].update(extra=1), "config describes no model"),
    ck_case("flow.pt history NaN", "flow", lambda p: p["history"].update(test_nll=[float("nan")]),
            "'history' is missing or invalid"),
]


# ---------------------------------------------------------------- sampling, devices, outputs

def args(*a: str, files: Callable[[Path], None] | None = None):
    def setup(tmp):
        if files:
            files(tmp)
        return [x.format(tmp=tmp) for x in a]
    return setup


def cuda_runs() -> str | None:
    return "CUDA really runs here" if not cuda_missing() else None


def existing(name: str):
    return lambda tmp: (tmp / name).write_text("keep me\n")


def regular_file(name: str):
    return lambda tmp: (tmp / name).write_text("a file, not a folder\n")


def read_only(tmp: Path) -> None:
    (tmp / "ro").mkdir()
    os.chmod(tmp / "ro", 0o555)


def as_root() -> str | None:
    return "root writes into read-only folders" if os.geteuid() == 0 else None


OTHER_CASES = [
    Case("sample -n 0", args("sample", "-n", "0", *CPU), 2, "-n must be a positive"),
    Case("sample -n negative", args("sample", "-n", "-5", *CPU), 2, "got -5"),
    Case("sample -n not a number", args("sample", "-n", "many", *CPU), 2, "not a valid integer"),
    Case("sample -n absurd", args("sample", "-n", str(10**15), *CPU), 2, "ask for fewer"),
    Case("sample -n too big for the disk", args("sample", "-n", str(10**12), "-o", "{tmp}/s.npy", *CPU), 1, "GiB"),
    Case("sample --method unknown", args("sample", "-n", "10", "--method", "magic"), 2, "magic"),
    Case("score --device cuda", args("score", "--device", "cuda"), 1, "missing", lambda t: AnomalyScorer(device="cuda"),
         skip=cuda_runs),
    Case("sample --device cuda", args("sample", "-n", "10", "--device", "cuda"), 1, "--device cpu",
         lambda t: FlowSampler(device="cuda"), skip=cuda_runs),
    Case("score --device unknown", args("score", "--device", "tpu"), 2, "tpu"),
    Case("score --batch-size 0", args("score", "--batch-size", "0", *CPU), 2, "batch-size"),
    Case("score --threshold nan", args("score", "--threshold", "nan", *CPU), 2, "finite"),
    Case("score -o missing folder", args("score", "-o", "{tmp}/missing/s.csv", *CPU), 1, "does not exist",
         lambda t: check_output_path(t / "missing" / "s.csv")),
    Case("score -o parent is a file", args("score", "-o", "{tmp}/f/s.csv", *CPU, files=regular_file("f")), 1,
         "is not a folder", lambda t: check_output_path(t / "f" / "s.csv")),
    Case("score -o read-only folder", args("score", "-o", "{tmp}/ro/s.csv", *CPU, files=read_only), 1,
         "not writable", lambda t: check_output_path(t / "ro" / "s.csv"), skip=as_root),
    Case("score -o exists", args("score", "-o", "{tmp}/s.csv", *CPU, files=existing("s.csv")), 1, "--force",
         lambda t: check_output_path(t / "s.csv")),
    Case("score -o is a folder", args("score", "-o", "{tmp}/d.csv", *CPU, files=lambda t: (t / "d.csv").mkdir()), 1,
         "folder"),
    Case("score -o unknown format", args("score", "-o", "{tmp}/s.txt", *CPU), 2, "unknown format"),
    Case("sample -o missing folder", args("sample", "-n", "10", "-o", "{tmp}/missing/s.npy", *CPU), 1,
         "does not exist"),
    Case("sample -o parent is a file", args("sample", "-n", "10", "-o", "{tmp}/f/s.npy", *CPU,
                                            files=regular_file("f")), 1, "is not a folder"),
    Case("sample -o read-only folder", args("sample", "-n", "10", "-o", "{tmp}/ro/s.npy", *CPU, files=read_only), 1,
         "not writable", skip=as_root),
    Case("sample -o exists", args("sample", "-n", "10", "-o", "{tmp}/s.npy", *CPU, files=existing("s.npy")), 1,
         "--force"),
    Case("sample --histogram exists", args("sample", "-n", "10", "--histogram", "{tmp}/h.png", *CPU,
                                           files=existing("h.png")), 1, "--force"),
    Case("sample -o unknown format", args("sample", "-n", "10", "-o", "{tmp}/s.txt", *CPU), 2, ".npy or .csv"),
    Case("evaluate --report parent missing", args("evaluate", "--report", "{tmp}/missing/r", *CPU), 1,
         "does not exist"),
    Case("evaluate --report is a file", args("evaluate", "--report", "{tmp}/r", *CPU, files=regular_file("r")), 1,
         "not a folder"),
]


OPTION_CASES = [
    Case("sample --seed negative", args("sample", "-n", "10", "--seed", "-1", *CPU), 2, "--seed must be an integer"),
    Case("sample --seed huge", args("sample", "-n", "10", "--seed", str(10**30), *CPU), 2, "from 0 to"),
    Case("sample --seed float", args("sample", "-n", "10", "--seed", "1.5", *CPU), 2, "not a valid integer"),
    Case("sample -n float", args("sample", "-n", "2.5", *CPU), 2, "not a valid integer"),
    Case("score --threshold 400 digits", args("score", "--threshold", "9" * 400, *CPU), 2, "finite"),
    Case("score --threshold inf", args("score", "--threshold", "inf", *CPU), 2, "finite"),
    Case("score --threshold negative", args("score", "--threshold", "-0.5", *CPU), 2, ">= 0"),
    Case("score --batch-size 1e8", args("score", "--batch-size", "100000000", *CPU), 2, "GiB"),
    Case("score --batch-size float", args("score", "--batch-size", "2.5", *CPU), 2, "not a valid integer"),
    Case("train ae --lr inf", args("train", "ae", "--lr", "inf", "-o", "{tmp}/run"), 2, "--lr must be a finite"),
    Case("train ae --lr nan", args("train", "ae", "--lr", "nan", "-o", "{tmp}/run"), 2, "--lr must be a finite"),
    Case("train ae --lr 0", args("train", "ae", "--lr", "0", "-o", "{tmp}/run"), 2, "--lr must be > 0"),
    Case("train ae --epochs huge", args("train", "ae", "--epochs", str(10**20), "-o", "{tmp}/run"), 2, "--epochs"),
    Case("train ae --batch-size 1e8", args("train", "ae", "--batch-size", "100000000", "-o", "{tmp}/run"), 2, "GiB"),
    Case("train flow --seed negative", args("train", "flow", "--seed", "-3", "-o", "{tmp}/run"), 2, "--seed"),
    Case("train flow --components 0", args("train", "flow", "--components", "0", "-o", "{tmp}/run"), 2,
         "--components"),
    Case("train flow --n-train huge", args("train", "flow", "--n-train", str(10**13), "-o", "{tmp}/run"), 2, "GiB"),
    Case("train flow diverges", args("train", "flow", "--lr", "1e30", "--epochs", "2", "-q", "-o", "{tmp}/run"), 1,
         "diverged"),
]

CASES = (INPUT_CASES + ARCHIVE_CASES + ARTIFACT_CASES + CHECKPOINT_CASES + CHECKPOINT_FIELD_CASES + OTHER_CASES
         + OPTION_CASES)


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1) for p in sorted(root.rglob("*"))}


# These cases run in a new process (its interpreter, lazy imports, exit through os._exit, native
# output on the real stderr), at least one of each kind (a train usage error: test_cli_streams'
# "train bad"); the others through the same cli.main in this process (invoke_cli: the interpreter's
# default warning filters, native output on fds 1 and 2 counted), where a new interpreter's
# start-up would add nothing but time.
IN_A_NEW_PROCESS = {"NaN", "npz corrupted", "input is a FIFO", "folder holds a link to a device", "ae.onnx corrupted",
                    "ae.onnx other inputs/outputs", "threshold.json malformed", "flow.onnx is the autoencoder",
                    "crafted checkpoint", "sample -n 0", "score --device cuda", "sample -o exists",
                    "evaluate --report is a file"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_error_case(case: Case, tmp_path, monkeypatch, capfd):
    if case.skip and (why := case.skip()):
        pytest.skip(why)
    argv = case.setup(tmp_path)
    if case.api is api_on_input:
        INPUT_OF[tmp_path] = argv[1]
    before = listing(tmp_path)
    try:
        if case.name in IN_A_NEW_PROCESS:
            proc = run_cli(*argv, cwd=tmp_path, timeout=120)
        else:
            monkeypatch.chdir(tmp_path)
            proc = invoke_cli(*argv, capfd=capfd)
    finally:
        if (tmp_path / "ro").exists():
            os.chmod(tmp_path / "ro", 0o755)
    line = assert_one_line_error(proc, case.code)
    assert line.split(": ", 1)[0] in ("aeflow", f"aeflow {argv[0]}"), line
    assert case.word in line, line
    assert listing(tmp_path) == before, "files were left behind or changed"
    assert not (tmp_path / "pwned").exists()
    if case.api is not None:
        with pytest.raises(AeflowError) as e:
            if (tmp_path / "ro").exists():
                os.chmod(tmp_path / "ro", 0o555)
            try:
                case.api(tmp_path)
            finally:
                if (tmp_path / "ro").exists():
                    os.chmod(tmp_path / "ro", 0o755)
        assert "\n" not in e.value.message
        assert line == f"aeflow: error: {cli_message(e.value.message)}"
        assert type(e.value).exit_code == case.code
        assert not (tmp_path / "pwned").exists()


def test_new_process_cases_are_cases():
    assert IN_A_NEW_PROCESS <= {c.name for c in CASES}


def test_sha_mismatch_loads_with_no_verify(tmp_path):
    argv = damaged(tamper("threshold.json"), extra=("--no-verify", "--json"))(tmp_path)
    proc = run_cli(*argv)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total"]["images"] == 4
    argv = damaged(tamper("flow.json"), "sample", ("--no-verify", "--json"))(tmp_path)
    proc = run_cli(*argv)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == 10


# ---------------------------------------------------------------- a file larger than memory

PEAK_RSS = """
import resource, subprocess, sys
subprocess.run([sys.executable, "-m", "aeflow", *sys.argv[1:]], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def peak_rss(*argv: str) -> int:
    """Peak resident bytes of ``aeflow ARGV`` run in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


def test_large_npy_is_streamed_not_loaded(tmp_path):
    """A .npy is scored batch by batch: the peak RSS grows by far less than the file's size (the
    pages of a scored batch are handed back), so a file larger than memory can be scored."""
    n = 150_000
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    for i in range(0, n, 25_000):
        big[i:i + 25_000] = images(25_000)
    big.flush()
    del big
    size = (tmp_path / "big.npy").stat().st_size
    save_npy(tmp_path, images(16), "small.npy")
    small = peak_rss("score", str(tmp_path / "small.npy"), *CPU, "--quiet")
    large = peak_rss("score", str(tmp_path / "big.npy"), *CPU, "--quiet")
    assert large - small < size / 4, (small, large, size)


# ---------------------------------------------------------------- Ctrl-C



def test_ctrl_c_during_sample_leaves_no_partial_file(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "aeflow", "sample", "-n", "200000000", "-o", "big.npy",
                             "--seed", "0", *CPU, "--quiet"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), 60), "never started"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted after" in lines[0] and "no output written" in lines[0], err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_writing_report_leaves_no_half_report(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from click.testing import CliRunner

    import aeflow.analysis.report as report
    from aeflow.cli import cli

    with np.load(bundled_dir() / "demo.npz") as demo:
        x, odd = demo["images"], demo["is_anomaly"]
    np.save(tmp_path / "normal.npy", x[~odd][:100])
    np.save(tmp_path / "odd.npy", x[odd][:100])
    real = report.write_atomic

    def interrupt_html(path, text, **kw):
        if Path(path).name == report.REPORT_HTML:
            raise KeyboardInterrupt
        return real(path, text, **kw)

    monkeypatch.setattr(report, "write_atomic", interrupt_html)
    for target in (tmp_path / "new", tmp_path / "old"):
        if target.name == "old":
            target.mkdir()
            (target / "keep.txt").write_text("mine\n")
        before = listing(tmp_path)
        r = CliRunner().invoke(cli, ["evaluate", "--in-dist", str(tmp_path / "normal.npy"), "--anomalies",
                                     str(tmp_path / "odd.npy"), "--report", str(target), *CPU, "--quiet", "--force"])
        assert r.exit_code == 130, r.output
        assert "no report written" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert listing(tmp_path) == before


def test_an_eof_error_from_a_library_is_an_error_not_an_interruption(monkeypatch, capfd):
    """click turns an EOFError (np.load of a truncated file, pickle, gzip) into Abort: 'aeflow: interrupted',
    exit 130, as if Ctrl-C had been pressed."""
    import aeflow.cli.info as info

    def truncated(*args, **kwargs):
        raise EOFError("No data left in file")

    monkeypatch.setattr(info, "gather_info", truncated)
    line = assert_one_line_error(invoke_cli("info", capfd=capfd), 1)
    assert "a file ended before its data did (No data left in file)" in line and "interrupted" not in line
