"""Hypothesis fuzzes every field of threshold.json and flow.json against the artifact contract
(``aeflow.runtime.contract``): a mutated document is either refused with one ``ArtifactError``
line, or, when the contract accepts it, its typed metadata writes back a document that loads to the
same metadata, and the scorer or sampler built from it loads and gives finite results, or refuses
with one ``AeflowError`` line. Nothing else may escape. Fixed seeds in CI."""

from __future__ import annotations

import json
import math
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from aeflow.errors import AeflowError  # noqa: E402
from aeflow.runtime import artifacts, contract  # noqa: E402

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
ODD = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1, 2, 10**400, -(10**400), 2**64, 0.5, -0.5, 1e308, -1e308, 5e-324,
                     math.nan, math.inf, -math.inf, "", "0.1", "x" * 300, [], {}, [0], [1, 2], [[0, 1]],
                     {"a": 1}, [math.nan, 1.0], [1.0, 0.0], "../ae.onnx", "/etc/passwd"]),
    st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(max_size=8),
    st.lists(st.floats(-1e3, 1e3), max_size=6),
)


@lru_cache(maxsize=2)
def bundled_doc(name: str) -> str:
    return (artifacts.bundled_dir() / name).read_text()


@lru_cache(maxsize=1)
def calibrated_doc() -> str:
    """The bundled threshold.json with both thresholds set by 'aeflow calibrate' (k and rate rules)."""
    from aeflow.runtime.calibration import calibrate_scores

    scores = np.random.default_rng(0).gamma(2.0, 0.01, 500)
    meta = artifacts.read_threshold(artifacts.bundled_dir())
    for which, rule in (("ae", {"k": 3.0}), ("int8", {"false_alarm_rate": 0.05})):
        cal = calibrate_scores(scores, [{"name": "x.npy", "kind": "file", "sha256": "0" * 64, "n": 500}], 0.03, **rule)
        meta = meta.calibrated(which, cal.threshold, cal.record)
    return json.dumps(meta.to_json())


def base_doc(name: str) -> dict:
    """The bundled document, with threshold.json's optional image_shape written out so that it is
    fuzzed too; "calibrated": threshold.json with calibration records."""
    if name == "calibrated":
        return json.loads(calibrated_doc())
    doc = json.loads(bundled_doc(name))
    return doc | {"image_shape": [28, 28]} if name == "threshold.json" else doc


def paths_of(doc, prefix=()):
    """Every (path, value) of a JSON document, depth first."""
    yield prefix, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths_of(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths_of(v, prefix + (i,))


@st.composite
def mutated_doc(draw, name: str) -> dict:
    doc = base_doc(name)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in paths_of(doc) if p]
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["set", "set", "delete", "nest"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "nest":
            parent[path[-1]] = {"x": [[[[parent[path[-1]]]]]]}
        else:
            parent[path[-1]] = draw(ODD)
    return doc


def write(doc: dict) -> str:
    return json.dumps(doc, allow_nan=True)


def only_aeflow_errors(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except AeflowError as e:
        assert e.message and "\n" not in e.message, e.message
        return None


@pytest.mark.parametrize("name", ["threshold.json", "flow.json", "calibrated"])
@FUZZ
@given(data=st.data())
def test_from_json(name, data):
    """Accepted or one line; an accepted document round-trips through ``to_json``."""
    doc = data.draw(mutated_doc(name))
    kind = contract.METADATA.get(name, contract.ThresholdMeta)
    meta = only_aeflow_errors(kind.from_json, doc, name, False)
    if meta is not None:
        again = kind.from_json(meta.to_json(), name)
        assert again.to_json() == meta.to_json()


def test_calibrated_document_loads():
    meta = contract.ThresholdMeta.from_json(json.loads(calibrated_doc()))
    assert meta.calibration["rule"] == "mean + k std" and meta.int8.calibration["rule"] == "false-alarm rate"


@pytest.fixture(scope="module")
def artifacts_copy(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("art")
    for p in artifacts.bundled_dir().iterdir():
        if p.is_file() and p.suffix in (".onnx", ".json", ".npz"):
            shutil.copy2(p, d / p.name)
    return d


@pytest.mark.parametrize("name", ["threshold.json", "flow.json"])
@FUZZ
@given(data=st.data())
def test_runtime_on_accepted_documents(name, data, artifacts_copy):
    """A sealed (content_sha256 recomputed) mutated document: the runtime refuses it in one line,
    or loads it and gives finite results."""
    from aeflow.runtime import AnomalyScorer, FlowSampler

    doc = data.draw(mutated_doc(name))
    try:
        doc = contract.seal(doc)
    except ValueError:  # NaN/Inf: not JSON; written as the NaN literal, which the reader must refuse
        pass
    (artifacts_copy / name).write_text(write(doc))
    try:
        if name == "threshold.json":
            scorer = only_aeflow_errors(AnomalyScorer, artifacts_copy, device="cpu")
            if scorer is not None:
                s = scorer.score(np.zeros((4, *scorer.metadata.image_shape), np.uint8))
                assert np.all(np.isfinite(s)) and math.isfinite(scorer.threshold) and scorer.threshold > 0
        else:
            sampler = only_aeflow_errors(FlowSampler, artifacts_copy, device="cpu")
            if sampler is not None:
                x = only_aeflow_errors(sampler.sample, 64, seed=0)
                if x is not None:
                    assert np.all(np.isfinite(x))
                    lo, hi = sampler.x_bracket
                    assert np.all((x >= lo) & (x <= hi))
    finally:
        (artifacts_copy / name).write_text(bundled_doc(name))


@pytest.mark.parametrize("name", ["threshold.json", "flow.json"])
@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                     st.sampled_from([b"[" * 100000, b'{"a":' * 50000, b"1" * 5000, b"\xef\xbb\xbf{}",
                                      b'{"schema_version": 2, "schema_version": 1}', b"NaN", b"{}" + b" " * 10])))
def test_read_metadata_any_bytes(name, raw, artifacts_copy):
    (artifacts_copy / name).write_bytes(raw)
    try:
        only_aeflow_errors(artifacts.read_metadata, artifacts_copy, name, True)
    finally:
        (artifacts_copy / name).write_text(bundled_doc(name))
