"""Hypothesis fuzzes every numeric argument and CLI option, and every field of the checkpoints:
whatever the value (negative, zero, huge, NaN/Inf, a float where an int is due, a wrong type),
the only failure that may escape is aeflow's own one-line ``AeflowError`` (the CLI: exit 1 or 2,
one line, no traceback). Fixed seeds in CI (conftest's "ci" profile)."""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from aeflow.errors import AeflowError  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])

# odd values for an argument that wants a small positive int (none of them is a valid big
# value: a valid 10**9 would really run)
ODD = st.sampled_from([-1, 0, -(2**63), 2**64, 10**400, 1.5, 3.0, -0.0, math.nan, math.inf, -math.inf, "3", "",
                       None, True, False, [1], {"n": 1}, b"7", np.int64(-5), np.float32(2.0), np.uint8(0), 1e300,
                       complex(1, 1)])
SMALL = st.integers(1, 40)
SEEDS = st.one_of(ODD, st.sampled_from([0, 2**63 - 1, 2**63, 2**128, np.int64(3), np.uint64(2**64 - 1)]))
OPTION_TEXT = st.sampled_from(["-1", "0", "1e400", "nan", "inf", "-inf", "1.5", "9" * 400, "", "abc", "0x10", " 3",
                               "-0", "3.0", "1_000", "\u0663", "1e3", "100000000", "-9" * 30])


def only_aeflow_errors(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except AeflowError as e:
        assert e.message and "\n" not in e.message


@lru_cache(maxsize=1)
def sampler():
    from aeflow.runtime import FlowSampler

    return FlowSampler(device="cpu")


@lru_cache(maxsize=1)
def scorer():
    from aeflow.runtime import AnomalyScorer

    return AnomalyScorer(device="cpu")


IMAGES = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)


# ---------------------------------------------------------------- the Python API

@FUZZ
@given(value=st.one_of(ODD, SMALL))
def test_scorer_arguments(value):
    from aeflow.runtime import AnomalyScorer

    only_aeflow_errors(lambda: AnomalyScorer(device="cpu", batch_size=value).score(IMAGES))
    only_aeflow_errors(lambda: AnomalyScorer(device=value))
    only_aeflow_errors(lambda: AnomalyScorer(precision=value))
    only_aeflow_errors(lambda: AnomalyScorer(device="cpu", threads=value))

    def set_threshold():
        scorer().threshold = value
    only_aeflow_errors(set_threshold)
    scorer().threshold = scorer().default_threshold


@FUZZ
@given(n=st.one_of(ODD, SMALL), seed=SEEDS, chunk=st.one_of(ODD, SMALL),
       method=st.sampled_from([None, "table", "graph", "bisection", "magic", 3, b"graph"]))
def test_sampler_arguments(n, seed, chunk, method):
    from aeflow.runtime import FlowSampler

    only_aeflow_errors(sampler().sample, n, seed=seed)
    only_aeflow_errors(sampler().sample, 5, seed=0, method=method)
    if not (isinstance(n, (int, np.integer)) and n > 1000):  # a valid huge n streams for ever
        only_aeflow_errors(lambda: list(sampler().sample_chunks(n, seed)))
    only_aeflow_errors(lambda: FlowSampler(device="cpu", chunk_size=chunk).sample(3, seed=1))
    only_aeflow_errors(sampler().invert, [n])
    only_aeflow_errors(sampler().forward, [n])


@FUZZ
@given(field=st.sampled_from(["epochs", "lr", "batch_size", "seed", "val_fraction", "n_components", "n_train",
                              "n_test"]), value=st.one_of(ODD, SEEDS))
def test_training_configs(field, value):
    pytest.importorskip("torch")
    from aeflow.train.autoencoder import AEConfig, check_ae_config
    from aeflow.train.flow import FlowConfig, check_flow_config

    for config, check in ((AEConfig(), check_ae_config), (FlowConfig(), check_flow_config)):
        if hasattr(config, field):
            setattr(config, field, value)
            only_aeflow_errors(check, config)


# ---------------------------------------------------------------- the CLI

def run(argv: list[str]):
    from click.testing import CliRunner

    from aeflow.cli import cli

    r = CliRunner().invoke(cli, argv)
    assert r.exception is None or isinstance(r.exception, SystemExit), (argv, r.exception)
    assert r.exit_code in (0, 1, 2), (argv, r.exit_code, r.output)
    if r.exit_code:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in r.output, (argv, r.stderr)
    return r


@FUZZ
@given(option=st.sampled_from(["-n", "--seed"]), text=OPTION_TEXT)
def test_sample_options(option, text):
    argv = ["sample", "--device", "cpu", "-q", "--json"]
    argv += [option, text] + (["-n", "7"] if option != "-n" else [])
    if option == "-n" and text in ("100000000", "1e3", "1_000"):
        return  # valid counts: they would really sample
    run(argv)


@FUZZ
@given(option=st.sampled_from(["--batch-size", "--threshold"]), text=OPTION_TEXT)
def test_score_options(option, text, tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "fuzz-images.npy"
    if not path.exists():
        np.save(path, IMAGES)
    run(["score", str(path), "--device", "cpu", "-q", option, text])


@FUZZ
@given(command=st.sampled_from(["ae", "flow"]),
       option=st.sampled_from(["--epochs", "--lr", "--batch-size", "--seed", "--components", "--n-train", "--n-test"]),
       text=OPTION_TEXT)
def test_train_options_are_checked_before_training(command, option, text, tmp_path_factory, monkeypatch):
    """Every value is checked before any work: training itself is replaced by a stub."""
    pytest.importorskip("torch")
    import aeflow.train.autoencoder as ae
    import aeflow.train.flow as flow

    trained = []

    def stub(out_dir, config, quiet=False, force=False):
        trained.append(config)
        raise AeflowError("stub: the options were accepted")

    monkeypatch.setattr(ae, "train_autoencoder", stub)
    monkeypatch.setattr(flow, "train_flow", stub)
    if command == "ae" and option in ("--components", "--n-train", "--n-test"):
        return
    out = tmp_path_factory.mktemp("run")
    run(["train", command, option, text, "-o", str(out / "r")])


# ---------------------------------------------------------------- checkpoint fields

ODD_FIELD_VALUES = st.one_of(
    ODD, st.text(max_size=5), st.lists(st.floats(allow_nan=True), max_size=3),
    st.builds(lambda shape, fill: ("tensor", shape, fill), st.lists(st.integers(0, 3), max_size=3),
              st.sampled_from([0.0, math.nan, math.inf, 1.0])),
)


def as_value(v):
    """Hypothesis draws plain data; ("tensor", shape, fill) becomes a torch tensor."""
    import torch

    if isinstance(v, tuple) and v and v[0] == "tensor":
        return torch.full(v[1], v[2])
    return v


@lru_cache(maxsize=2)
def bundled_payload(kind: str) -> bytes:
    from aeflow.runtime.artifacts import bundled_dir

    return (bundled_dir() / f"{kind}.pt").read_bytes()


@FUZZ
@given(kind=st.sampled_from(["ae", "flow"]), data=st.data())
def test_checkpoint_fields(kind, data, tmp_path_factory):
    torch = pytest.importorskip("torch")
    from aeflow.export.exporter import load_autoencoder, load_flow

    payload = torch.load(io.BytesIO(bundled_payload(kind)), weights_only=True)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(["top", "config", "history", "state_dict"]))
        target = payload if where == "top" else payload.get(where)
        if not isinstance(target, dict) or not target:
            continue
        key = data.draw(st.sampled_from(sorted(target, key=str)))
        if data.draw(st.booleans()):
            del target[key]
        else:
            target[key] = as_value(data.draw(ODD_FIELD_VALUES))
    path = tmp_path_factory.mktemp("ck") / f"{kind}.pt"
    torch.save(payload, path)
    only_aeflow_errors(load_autoencoder if kind == "ae" else load_flow, path)
