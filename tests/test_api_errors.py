"""The Python API fails with one documented exception family: every mistake below raises an
``AeflowError`` subclass (the one the CLI would exit with) carrying a one-line message."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from aeflow.errors import AeflowError, ArtifactError, InputError, Interrupted, UsageError
from aeflow.runtime.inputs import ArraySource
from aeflow.runtime.sampler import FlowSampler
from aeflow.runtime.scorer import AnomalyScorer


@lru_cache(maxsize=1)
def scorer() -> AnomalyScorer:
    return AnomalyScorer(device="cpu")


@lru_cache(maxsize=1)
def sampler() -> FlowSampler:
    return FlowSampler(device="cpu")


def set_threshold(value):
    s = AnomalyScorer(device="cpu")
    s.threshold = value


x = np.zeros((2, 28, 28), np.float32)
CASES = [
    ("score 32x32", lambda: scorer().score(np.zeros((2, 32, 32), np.uint8)), InputError, "32x32"),
    ("score 1-D", lambda: scorer().score(np.zeros(10, np.float32)), InputError, "1-D"),
    ("score one image", lambda: scorer().score(np.zeros((28, 28), np.uint8)), InputError, "x[None]"),
    ("score int64", lambda: scorer().predict(np.zeros((2, 28, 28), np.int64)), InputError, "int64"),
    ("score strings", lambda: scorer().score(np.full((2, 28, 28), "a")), InputError, "strings"),
    ("score ragged list", lambda: scorer().score([[0.0] * 784, [0.0]]), InputError, "cannot make an array"),
    ("score NaN", lambda: scorer().score(np.where(np.arange(2)[:, None, None] == 1, np.nan, x)), InputError,
     "image 1"),
    ("score 0..255 floats", lambda: scorer().reconstruct(x + 200), InputError, "divide by 255"),
    ("score empty", lambda: scorer().decision_function(np.zeros((0, 784), np.float32)), InputError, "no images"),
    ("labels do not match", lambda: ArraySource(x, labels=np.ones(3, bool)), InputError, "is_anomaly"),
    ("threshold NaN", lambda: set_threshold(float("nan")), UsageError, "finite"),
    ("threshold negative", lambda: set_threshold(-1.0), UsageError, "finite"),
    ("batch size 0", lambda: AnomalyScorer(batch_size=0), UsageError, "batch_size"),
    ("precision", lambda: AnomalyScorer(precision="fp8"), UsageError, "fp8"),
    ("device", lambda: AnomalyScorer(device="gpu"), UsageError, "gpu"),
    ("artifacts missing", lambda: AnomalyScorer("no/such/folder"), ArtifactError, "does not exist"),
    ("artifacts not a path", lambda: AnomalyScorer(123), UsageError, "a folder path"),  # was TypeError
    ("sampler artifacts not a path", lambda: FlowSampler(["runs/a"]), UsageError, "a folder path"),
    ("sample 0", lambda: sampler().sample(0), UsageError, "positive"),
    ("sample -3", lambda: list(sampler().sample_chunks(-3)), UsageError, "positive"),
    ("sample 2.5", lambda: sampler().sample(2.5), UsageError, "positive"),
    ("sample absurd", lambda: sampler().sample(10**11), InputError, "ask for fewer"),
    ("sample beyond any machine", lambda: sampler().sample(10**15), UsageError, "up to 1e+12"),
    ("method", lambda: sampler().invert([0.0], method="magic"), UsageError, "magic"),
    ("invert outside range", lambda: sampler().invert([0.0, 1e9, np.nan]), InputError, "2 of 3"),
    ("chunk size", lambda: FlowSampler(chunk_size=0), UsageError, "chunk_size"),
]


@pytest.mark.parametrize("call, kind, word", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_api_raises_one_line_aeflow_error(call, kind, word):
    with pytest.raises(AeflowError) as e:
        call()
    assert isinstance(e.value, kind), repr(e.value)
    assert word in e.value.message and "\n" not in e.value.message
    assert str(e.value) == e.value.message


def test_hierarchy_is_documented():
    import aeflow.errors as errors

    subclasses = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, AeflowError)
                  and c is not AeflowError]
    assert len(subclasses) >= 7 and Interrupted.exit_code == 130 and UsageError.exit_code == 2
    for c in subclasses:
        assert c.__name__ in errors.__doc__ and c.__doc__
    from aeflow.cli import score as score_command

    assert issubclass(score_command.Interrupted, AeflowError)
