"""JSON values checked in plain code (``Check``: one ``ArtifactError`` line naming file and field), ``seal``,
and the checks of the calibration record and export's ``evaluation`` (both kept as dicts)."""

import hashlib
import json
import math
import re
from typing import NoReturn

from aeflow.checks import shorten
from aeflow.errors import ArtifactError

RULES = {"mean + k std": ("k", "mean", "std", "ddof"), "false-alarm rate": ("false_alarm_rate", "rank")}
RECORD = ("rule", "n", "flagged", "achieved_false_alarm_rate", "interval", "prediction", "data", "date",
          "previous_threshold", "versions")
SHA256 = "[0-9a-f]{64}"
CALIBRATION_SCORES = "calibration_scores.npy"  # ae.onnx's calibration scores, float32 [n], for p-values


def show(value) -> str:
    """A short, always printable rendering of a JSON value."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    return shorten(json.dumps(value) if isinstance(value, (str, bool)) or value is None else repr(value))


class Check:
    """Checks of one JSON file's values; a failure is one ``ArtifactError`` naming the file and field."""

    def __init__(self, where):
        self.where = where

    def fail(self, field: str, reason: str) -> NoReturn:
        raise ArtifactError(f"{self.where}: field '{field}' {reason}; re-export the artifacts")

    def obj(self, value, field: str, keys: tuple = (), optional: tuple = (), closed: bool = True) -> dict:
        """A JSON object holding ``keys``; when ``closed``, nothing beyond them and ``optional``."""
        if not isinstance(value, dict):
            self.fail(field, f"must be an object, found {show(value)}")
        missing = [key for key in keys if key not in value]
        extra = sorted(set(value) - set(keys) - set(optional)) if closed else []
        if missing or extra:
            self.fail((f"{field}." if field else "") + (missing or extra)[0][:40],
                      "is missing" if missing else "is not a field of this schema")
        return value

    def num(self, value, field: str, lo=None, hi=None, lo_open=False, integer=False):
        """A finite JSON number (``integer``: an int) in [lo, hi] ((lo, hi] when ``lo_open``)."""
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            self.fail(field, f"must be {'an integer' if integer else 'a number'}, found {show(value)}")
        if isinstance(value, int) and value.bit_length() > 63:
            self.fail(field, f"is out of range, found {show(value)}")
        if not math.isfinite(value):
            self.fail(field, f"must be finite, found {show(value)}")
        if lo is not None and (value <= lo if lo_open else value < lo):
            self.fail(field, f"must be {'>' if lo_open else '>='} {lo:g}, found {show(value)}")
        if hi is not None and value > hi:
            self.fail(field, f"must be <= {hi:g}, found {show(value)}")
        return value

    def count(self, value, field: str, lo: int = 0) -> int:
        return self.num(value, field, lo, 10**12, integer=True)

    def rate(self, value, field: str) -> float:
        return self.num(value, field, 0.0, 1.0)

    def text(self, value, field: str, pattern: str | None = None, max_len: int = 1000) -> str:
        if not isinstance(value, str):
            self.fail(field, f"must be a string, found {show(value)}")
        if len(value) > max_len or (pattern and not re.fullmatch(pattern, value)):
            self.fail(field, f"is not a valid value, found {show(value)}")
        return value

    def same(self, value, field: str, want) -> None:
        if type(value) is not type(want) or value != want:
            self.fail(field, f"must be {show(want)}, found {show(value)}")

    def numbers(self, value, field: str, n: tuple[int, int], **bounds) -> tuple:
        if not isinstance(value, list):
            self.fail(field, f"must be an array, found {show(value)}")
        if not n[0] <= len(value) <= n[1]:
            self.fail(field, f"must have {n[0] if n[0] == n[1] else f'{n[0]} to {n[1]}'} items, found {len(value)}")
        return tuple(self.num(v, f"{field}[{i}]", **bounds) for i, v in enumerate(value))

    def table(self, value, field: str, item) -> dict:
        """A JSON object of at most 100 short names -> values that pass ``item(value, field)``."""
        self.obj(value, field, closed=False)
        if len(value) > 100 or any(len(k) > 100 for k in value):
            self.fail(field, "has too many or too long names")
        for k, v in value.items():
            item(v, f"{field}.{k}")
        return value

    def versions(self, value, field: str) -> dict:
        return self.table(value, field, lambda v, f: self.text(v, f, max_len=100))


def content_sha256(doc: dict) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of ``doc`` without ``content_sha256``."""
    rest = {k: v for k, v in doc.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()).hexdigest()


def seal(doc: dict) -> dict:
    """``doc`` with ``content_sha256`` set to the hash of its other fields."""
    return {k: v for k, v in doc.items() if k != "content_sha256"} | {"content_sha256": content_sha256(doc)}


def calibration_record(c: Check, cal, field: str, threshold: float) -> dict:
    """``cal`` (at ``field``), the record ``aeflow.runtime.calibration`` writes, checked against ``threshold``."""
    f, rule = field + ".", c.obj(cal, field, ("rule",), closed=False)["rule"]
    if not isinstance(rule, str) or rule not in RULES:
        c.fail(f + "rule", f"has an unexpected value, found {show(rule)}")
    c.obj(cal, field, (*RECORD, *RULES[rule]), ("scores",))  # the other rule's parameters: not fields here
    n, flagged = c.count(cal["n"], f + "n", 1), c.count(cal["flagged"], f + "flagged")
    rate = c.rate(cal["achieved_false_alarm_rate"], f + "achieved_false_alarm_rate")
    if rule == "mean + k std":
        k, mean, std = (c.num(cal[p], f + p, 0.0, 100.0 if p == "k" else None, p == "k") for p in ("k", "mean", "std"))
        c.same(cal["ddof"], f + "ddof", 1)
        if not math.isclose(threshold, mean + k * std, rel_tol=1e-9):
            c.fail(field, f"threshold {threshold!r} is not calibration.mean + k * calibration.std")
    else:
        c.num(cal["false_alarm_rate"], f + "false_alarm_rate", 0.0, 1.0, True)
        if c.count(cal["rank"], f + "rank", 1) > n:
            c.fail(f + "rank", "is larger than n")
    if flagged > n or not math.isclose(rate, flagged / n, rel_tol=1e-9):
        c.fail(f + "achieved_false_alarm_rate", "is not flagged / n")
    _intervals_and_data(c, cal, f, n, rate)
    c.text(cal["date"], f + "date", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
    c.num(cal["previous_threshold"], f + "previous_threshold", 0.0)
    c.versions(cal["versions"], f + "versions")
    if "scores" in cal:  # the calibration scores p-values compare with (absent before they were kept)
        sc = c.obj(cal["scores"], f + "scores", ("file", "sha256", "n"))
        c.same(sc["file"], f + "scores.file", CALIBRATION_SCORES)
        c.text(sc["sha256"], f + "scores.sha256", SHA256), c.same(sc["n"], f + "scores.n", n)
    return cal


def _intervals_and_data(c: Check, cal: dict, f: str, n: int, rate: float) -> None:
    """A calibration record's interval (holding ``rate``), prediction and inputs (``n`` images in all)."""
    iv = c.obj(cal["interval"], f + "interval", ("method", "confidence", "lower", "upper"))
    pr = c.obj(cal["prediction"], f + "prediction", ("method", "images", "confidence", "lower", "upper"))
    for name, part in (("interval.", iv), ("prediction.", pr)):
        c.text(part["method"], f + name + "method", max_len=200)
        c.num(part["confidence"], f + name + "confidence", 0.0, 1.0, True)
    if not c.rate(iv["lower"], f + "interval.lower") <= rate <= c.rate(iv["upper"], f + "interval.upper"):
        c.fail(f + "interval", "does not contain the achieved rate")
    if not c.count(pr["lower"], f + "prediction.lower") <= c.count(pr["upper"], f + "prediction.upper") \
            <= c.count(pr["images"], f + "prediction.images", 1):
        c.fail(f + "prediction", "must hold lower <= upper <= images")
    data = cal["data"]
    if not isinstance(data, list) or not 1 <= len(data) <= 1000:
        c.fail(f + "data", f"must be an array of 1 to 1000 inputs, found {show(data)}")
    for i, d in enumerate(data):
        g = f"{f}data[{i}]."
        c.obj(d, g[:-1], ("name", "kind", "sha256", "n"))
        c.text(d["name"], g + "name"), c.text(d["kind"], g + "kind", "file|folder|array")
        c.text(d["sha256"], g + "sha256", SHA256), c.count(d["n"], g + "n", 1)
    if sum(d["n"] for d in data) != n:
        c.fail(f + "data", "holds another number of images than n")


def evaluation(c: Check, ev, field: str) -> dict:
    """``ev`` (at ``field``), each part optional: type_i {set, n, rate}, type_ii {set: {n, rate}}, auroc {set: rate}."""
    c.obj(ev, field, (), ("type_i", "type_ii", "auroc"), closed=field == "evaluation")
    if "type_i" in ev:
        t = c.obj(ev["type_i"], field + ".type_i", ("set", "n", "rate"))
        c.text(t["set"], field + ".type_i.set", max_len=100), c.count(t["n"], field + ".type_i.n")
        c.rate(t["rate"], field + ".type_i.rate")
    c.table(ev.get("type_ii", {}), field + ".type_ii",
            lambda v, f: (c.obj(v, f, ("n", "rate")), c.count(v["n"], f + ".n"), c.rate(v["rate"], f + ".rate")))
    c.table(ev.get("auroc", {}), field + ".auroc", c.rate)
    if set(ev.get("type_ii", {})) != set(ev.get("auroc", {})):
        c.fail(field + ".auroc", "names other sets than evaluation.type_ii")
    return ev
