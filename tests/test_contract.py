"""The artifact contract (aeflow.runtime.contract) and loading a folder (aeflow.runtime.artifacts):
every field of threshold.json and flow.json, the bindings (hashes, content_sha256, golden outputs),
graph signatures, the image size, and one-line failures for any damaged file of a folder."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest

from conftest import assert_one_line_error, copy_artifacts, edit_metadata, invoke_cli, run_cli

from aeflow.errors import ArtifactError, DeviceError, ParityError
from aeflow.files import sha256_file
from aeflow.runtime import AnomalyScorer, FlowSampler, artifacts, contract
from aeflow.runtime.golden import load_graph


@pytest.fixture
def art(bundled, tmp_path):
    return copy_artifacts(bundled, tmp_path / "art")


def load_all(d):
    """Everything the runtime loads from ``d``: both scorers, the sampler and its graph."""
    AnomalyScorer(d, device="cpu")
    AnomalyScorer(d, device="cpu", precision="int8")
    FlowSampler(d, device="cpu").invert([0.0], method="graph")


def test_bundled_metadata_is_valid_sealed_and_round_trips(bundled):
    for name in (contract.THRESHOLD_JSON, contract.FLOW_JSON):
        raw = json.loads((bundled / name).read_text())
        meta = artifacts.read_metadata(bundled, name)
        doc = meta.to_json()
        assert raw["schema_version"] == doc["schema_version"] == contract.SCHEMA_VERSION == 2
        assert doc["content_sha256"] == contract.content_sha256(doc)
        assert doc == raw  # every field written back as export wrote it, the seal included
        assert type(meta).from_json(doc).to_json() == doc
        # byte for byte, key order included: 'make artifacts' rewrites the bundled files as they are
        assert json.dumps(doc, indent=2) + "\n" == (bundled / name).read_text()
    assert artifacts.read_threshold(bundled).image_shape == (28, 28)
    load_all(bundled)


def test_a_calibration_record_is_written_last(art):
    """threshold.json keeps export's order, then the calibration record (a refactor moved it and 'evaluation'
    between the graph's fields and 'image_shape')."""
    meta = artifacts.read_threshold(art)
    doc = meta.calibrated("ae", meta.threshold * 1.5, {"rule": "test"}).to_json()
    assert list(doc)[-2:] == ["calibration", "content_sha256"]
    assert [k for k in doc if k not in ("calibration",)] == list(meta.to_json())


def test_files_without_image_shape_load_as_28x28(art):
    """threshold.json written before image_shape and p-values existed still loads and scores."""
    edit_metadata(art / TH, lambda m: [m.pop(k, None) for k in ("image_shape", "validation_scores")])
    meta = artifacts.read_threshold(art)
    assert meta.image_shape == (28, 28) and meta.validation_scores is None
    assert AnomalyScorer(art, device="cpu").score(np.zeros((2, 28, 28), np.uint8)).shape == (2,)


def _set(path: str, value):
    """An edit setting the dotted ``path`` (list indices as numbers) of a JSON document."""
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def edit(meta):
        node = meta
        for k in keys[:-1]:
            node = node[k]
        if value is _DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return edit


_DELETE = object()
TH, FL = contract.THRESHOLD_JSON, contract.FLOW_JSON

# (file, dotted field, new value, words the one-line error must hold)
FIELD_CASES = [
    (TH, "threshold", True, "field 'threshold' must be a number, found true"),
    (TH, "threshold", -1, "field 'threshold' must be > 0"),
    (TH, "threshold", "0.1", "field 'threshold' must be a number"),
    (TH, "threshold", 10**30, "field 'threshold' is out of range"),
    (TH, "threshold", 0.05, "field 'threshold' 0.05 is not validation.mean + k * validation.std"),
    (TH, "k", 0, "field 'k' must be > 0"),
    (TH, "validation.ddof", 0, "field 'validation.ddof' must be 1"),
    (TH, "validation.ddof", True, "field 'validation.ddof' must be 1, found true"),
    (TH, "validation.n", 1.5, "field 'validation.n' must be an integer"),
    (TH, "score", _DELETE, "field 'score' is missing"),
    (TH, "surprise", 1, "field 'surprise' is not a field of this schema"),
    (TH, "opset", True, "field 'opset' must be an integer"),
    (TH, "onnx_file", "../ae.onnx", "field 'onnx_file' must be \"ae.onnx\""),
    (TH, "sha256", "abc", "field 'sha256' is not a valid value"),
    (TH, "outputs.score", ["N", 1], "field 'outputs' must be the graph's signature"),
    (TH, "image_shape", [2, 28], "field 'image_shape' must be [H, W] with H, W of 4 to 1,024 and H * W <= 65,536"),
    (TH, "image_shape", [4096, 2048], "field 'image_shape' must be [H, W]"),
    (TH, "image_shape", [28.0, 28], "field 'image_shape' must be [H, W]"),
    (TH, "image_shape", [32, 32], "field 'score' must be \"mean over the 1024 pixels"),
    (TH, "evaluation.type_i.rate", 1.5, "field 'evaluation.type_i.rate' must be <= 1"),
    (TH, "evaluation.auroc.fashion-mnist-test", None, "field 'evaluation.auroc.fashion-mnist-test' must be a number"),
    (TH, "data.anomaly_sets", [], "field 'data.anomaly_sets' differs from the sets of evaluation.type_ii"),
    (TH, "versions.numpy", 2, "field 'versions.numpy' must be a string"),
    (TH, "golden.file", "other.npz", "field 'golden.file' is not a valid value, found \"other.npz\""),
    (TH, "checkpoint.file", "../ae.pt", "field 'checkpoint.file' is not a valid value"),
    (TH, "int8.threshold", "high", "field 'int8.threshold' must be a number"),
    (TH, "int8.validation.n", 10, "field 'int8.validation.n' differs from data.validation_images"),
    (TH, "int8.method", [], "field 'int8.method' must be an object, found a JSON array"),
    (TH, "training.final_loss", "low", "field 'training.final_loss' must be a number"),
    (TH, "data.train_images", _DELETE, "field 'data.train_images' is missing"),
    (FL, "W", 7.0, "field 'W' 7.0 is not the sum of components.weight"),
    (FL, "W", False, "field 'W' must be a number, found false"),
    (FL, "z_range.0", -3.0, "field 'z_range' must be [-W/2, W/2]"),
    (FL, "z_range", [0.0], "field 'z_range' must have 2 items"),
    (FL, "x_bracket", [169.0, -166.0], "field 'x_bracket' must be ordered"),
    (FL, "x_bracket", [-1.0, 1.0], "field 'x_bracket' does not map onto the range"),
    (FL, "z_at_bracket", [-3.0, 3.0], "field 'z_at_bracket' must be the range's ends"),
    (FL, "components.sigma.1", -0.5, "field 'components.sigma[1]' must be > 0"),
    (FL, "components.mu", [0.0], "field 'components.mu' has 1 values, n_components is 5"),
    (FL, "n_components", True, "field 'n_components' must be an integer, found true"),
    (FL, "target", "N(0, 2)", "field 'target' must be \"N(0, 1)\""),
    (FL, "training.n_components", 4, "field 'training.n_components' differs from n_components 5"),
    (FL, "sampler_graph.newton_steps", 0, "field 'sampler_graph.newton_steps' must be >= 1"),
    (FL, "sampler_graph.float64_z_intervals.0", [1.0], "field 'sampler_graph.float64_z_intervals[0]' must have 2 items"),
    (FL, "sampler_graph.float64_z_intervals.0", [1.0, 0.5], "float64_z_intervals[0]' must be an ordered pair"),
    (FL, "sampler_graph.check.max_abs_residual", 1.0, "field 'sampler_graph.check' records a failed export check"),
    (FL, "sampler_graph", _DELETE, "field 'sampler_graph' is missing"),
    (FL, "sampler_graph.tail_mass", 4.0, "field 'sampler_graph.tail_mass' must be below W/2"),
    (FL, "nll.test", "x", "field 'nll.test' must be a number"),
    (FL, "schema_version", 99, "unknown schema_version 99"),
    (FL, "schema_version", True, "unknown schema_version true"),
]


@pytest.mark.parametrize("name, field, value, words", FIELD_CASES, ids=lambda v: str(v)[:40])
def test_every_field_is_checked_with_one_line_naming_file_and_field(art, name, field, value, words):
    edit_metadata(art / name, _set(field, value))
    with pytest.raises(ArtifactError) as e:
        artifacts.read_metadata(art, name)
    assert words in e.value.message and str(art / name) in e.value.message
    assert "\n" not in e.value.message


def test_image_shape_is_recorded_and_checked_against_the_graph(art):
    """[28, 28] written out loads as today; another size must match the graph's signature, which
    the 28 x 28 graph does not (the score definition follows the size)."""
    edit_metadata(art / TH, image_shape=[28, 28])
    assert AnomalyScorer(art, device="cpu").metadata.image_shape == (28, 28)
    edit_metadata(art / TH, _set("image_shape", [32, 32]))
    edit_metadata(art / TH, score=contract.score_definition((32, 32)))
    with pytest.raises(ArtifactError, match=r"inputs' must be the graph's signature \{\"images\": \[\"N\", 1, 32, 32\]"):
        artifacts.read_threshold(art)
    doc = json.loads((art / TH).read_text())
    for key, entry in (("", doc), ("int8.", doc["int8"])):
        entry["inputs"], entry["outputs"] = (contract.signature("ae", (32, 32))[k] for k in ("inputs", "outputs"))
    (art / TH).write_text(json.dumps(contract.seal(doc)))
    meta = artifacts.read_threshold(art)
    assert meta.image_shape == (32, 32) and meta.to_json()["image_shape"] == [32, 32]
    with pytest.raises(ArtifactError, match=r"input 'images' is tensor\(float\) \['N', 1, 28, 28\] \(expected tensor\(float\) \['N', 1, 32, 32\]\)"):
        AnomalyScorer(art, device="cpu")


def test_image_shape_is_refused_at_load_unless_the_readers_feed_it(art):
    """The README's image sizes (sides 4 to 1,024, at most 65,536 pixels: what training makes and the readers
    read) are the contract's: a size beyond them is refused at load with one line, never loaded to refuse
    every input; one inside them fails only later, on the 28 x 28 graph's signature."""
    from aeflow.errors import InputError
    from aeflow.runtime.arrays import check_image_shape

    for shape in [(4, 4), (1024, 64), (64, 1024), (256, 256), (3, 28), (2048, 16), (16, 1025), (4, 4096), (300, 300)]:
        edit_metadata(art / TH, image_shape=list(shape), score=contract.score_definition(shape))
        readers_ok = min(shape) >= 4 and max(shape) <= 1024
        if readers_ok and shape[0] * shape[1] <= 65_536:
            assert check_image_shape(shape, "x") == shape
            with pytest.raises(ArtifactError, match="inputs' must be the graph's signature"):
                artifacts.read_threshold(art)
            continue
        if not readers_ok:
            with pytest.raises(InputError):
                check_image_shape(shape, "x")
        with pytest.raises(ArtifactError, match="field 'image_shape' must be") as e:
            artifacts.read_threshold(art)
        assert "\n" not in e.value.message, shape


@pytest.mark.parametrize("text, words", [
    ("[" * 100_000 + "]" * 100_000, "malformed JSON"),
    ('{"schema_version": 2, "threshold": NaN}', "NaN is not a JSON number"),
    ('{"schema_version": 2, "threshold": Infinity}', "Infinity is not a JSON number"),
    ('{"schema_version": 2, "schema_version": 2}', "duplicate key 'schema_version'"),
    ("{" + ",".join(f'"k{i}":0' for i in range(80_000)) + ',"k79999":1}', "duplicate key 'k79999'"),  # linear
    ('{"threshold": ' + "9" * 5000 + "}", "malformed JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"schema_version": 1, "threshold": 0.1}', "schema_version 1 was written by an older aeflow"),
    ('{"a": "' + "x" * (2 << 20) + '"}', "more than metadata can be"),
], ids=["deep", "nan", "inf", "duplicate", "duplicate-last-of-80000", "huge-int", "list", "schema-1", "huge-file"])
def test_malformed_json_is_one_line(art, text, words):
    (art / TH).write_text(text)
    with pytest.raises(ArtifactError) as e:
        AnomalyScorer(art, device="cpu")
    assert words in e.value.message and "\n" not in e.value.message
    (art / TH).write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ArtifactError, match="malformed JSON"):
        artifacts.read_threshold(art)


def test_schema_1_says_how_to_re_export(art):
    edit_metadata(art / FL, schema_version=1, seal=False)
    line = assert_one_line_error(run_cli("sample", "-n", "5", "--artifacts", str(art), "--device", "cpu"), 1)
    assert "schema_version 1" in line and "aeflow export -o DIR" in line


def test_edited_component_mean_fails_at_load(art):
    meta = edit_metadata(art / FL, _set("components.mu.0", 1.86), seal=False)  # was 1.85...
    with pytest.raises(ArtifactError, match="content_sha256; the file was edited after export"):
        FlowSampler(art, device="cpu")
    # unverified, the golden check still binds the components to flow.onnx
    with pytest.raises(ArtifactError, match="components do not reproduce flow.onnx"):
        FlowSampler(art, device="cpu", verify=False)
    assert meta["components"]["mu"][0] == 1.86
    FlowSampler(art, device="cpu", verify=False, golden=False)  # both checks off: loads


def test_edited_threshold_fails_at_load(art):
    edit_metadata(art / TH, threshold=0.5, seal=False)
    with pytest.raises(ArtifactError, match="content_sha256"):
        AnomalyScorer(art, device="cpu")
    # unverified, the threshold must still be the recorded validation statistics'
    with pytest.raises(ArtifactError, match="field 'threshold' 0.5 is not validation.mean"):
        AnomalyScorer(art, device="cpu", verify=False)


def _rewrite_golden(d, change):
    with np.load(d / contract.GOLDEN_FILE) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (d / contract.GOLDEN_FILE).write_bytes(buf.getvalue())
    sha = sha256_file(d / contract.GOLDEN_FILE)
    for name in (TH, FL):
        edit_metadata(d / name, _set("golden.sha256", sha))


@pytest.mark.parametrize("array, make", [
    ("ae_score", lambda: AnomalyScorer), ("int8_score", lambda: lambda d, **kw: AnomalyScorer(d, precision="int8", **kw)),
    ("flow_log_prob", lambda: FlowSampler),
], ids=["ae", "int8", "flow"])
def test_other_numerics_caught_by_the_golden_check(art, array, make):
    """A provider whose outputs differ from the recorded ones by 1e-3 (as TF32 matmuls would) fails
    at load with one line, before any result; golden=False loads anyway."""
    _rewrite_golden(art, lambda a: a.__setitem__(array, a[array] + np.float32(1e-3)))
    with pytest.raises(ParityError) as e:
        make()(art, device="cpu")
    assert "differs from the golden outputs recorded at export" in e.value.message
    assert "golden=False" in e.value.message
    make()(art, device="cpu", golden=False)


def test_sampler_graph_golden(art):
    _rewrite_golden(art, lambda a: a.__setitem__("sampler_x", a["sampler_x"] + 1e-4))
    s = FlowSampler(art, device="cpu")
    assert s.sample(10, seed=0, method="bisection").shape == (10,)
    with pytest.raises(ParityError, match="flow_sampler.onnx on CPUExecutionProvider: sample differs"):
        s.sample(10, seed=0)


def test_golden_file_is_checked(art):
    _rewrite_golden(art, lambda a: a.__setitem__("ae_score", a["ae_score"][:10]))
    with pytest.raises(ArtifactError, match=r"array 'ae_score' is float32 \(10,\)"):
        AnomalyScorer(art, device="cpu")
    (art / contract.GOLDEN_FILE).write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="golden.npz: sha256"):
        AnomalyScorer(art, device="cpu")
    (art / contract.GOLDEN_FILE).unlink()
    with pytest.raises(ArtifactError, match="golden.npz: not found"):
        AnomalyScorer(art, device="cpu")
    AnomalyScorer(art, device="cpu", golden=False)


def test_golden_check_is_fast(bundled):
    """Measured, not asserted (the CI machine is shared): the README quotes these figures."""
    meta = artifacts.read_threshold(bundled)
    load_graph(bundled, meta, "ae", "cpu")
    t = time.perf_counter()
    load_graph(bundled, meta, "ae", "cpu")
    with_golden = time.perf_counter() - t
    t = time.perf_counter()
    load_graph(bundled, meta, "ae", "cpu", golden=False)
    print(f"ae.onnx load {with_golden * 1e3:.1f} ms with the golden check, {(time.perf_counter() - t) * 1e3:.1f} ms without")


def _graph(outputs, score_shape=("N",), score_type=None):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    score_type = score_type or TensorProto.FLOAT
    nodes = [helper.make_node("Identity", ["images"], ["reconstruction"]),
             helper.make_node("ReduceMean", ["images", "axes"], ["mean"], keepdims=0),
             helper.make_node("Cast", ["mean"], ["score"], to=score_type)]
    axes = numpy_helper.from_array(np.array(outputs, np.int64), "axes")
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, ["N", 1, 28, 28]),
         helper.make_tensor_value_info("score", score_type, list(score_shape))], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    return model.SerializeToString()


@pytest.mark.parametrize("axes, shape, dtype, words", [
    ([1, 2, 3], ("N", 1), None, "output 'score' is tensor(float)"),
    ([1, 2, 3], ("N",), "double", "output 'score' is tensor(double) ['N'] (expected tensor(float) ['N'])"),
    ([2, 3], ("N",), None, "output 'score' is tensor(float)"),
], ids=["declared-rank", "dtype", "inferred-rank"])
def test_graph_breaking_the_signature_fails_at_load(art, axes, shape, dtype, words):
    """Right names, wrong shape or dtype: one line at load, never uninitialised result rows."""
    from onnx import TensorProto

    (art / contract.AE_FILE).write_bytes(_graph(axes, shape, TensorProto.DOUBLE if dtype else None))
    edit_metadata(art / TH, sha256=sha256_file(art / contract.AE_FILE))
    with pytest.raises(ArtifactError) as e:
        AnomalyScorer(art, device="cpu")
    assert words in e.value.message and "breaks the artifact contract" in e.value.message


def test_actual_output_shape_is_checked_by_the_golden_run(bundled):
    """A graph that declares the right shapes but returns others is caught on the golden inputs."""
    from aeflow.runtime.golden import golden_rows

    meta = artifacts.read_threshold(bundled)
    arrays = artifacts.read_golden(bundled, meta, "ae")

    class Liar:
        def run(self, names, feed):
            return [arrays["ae_reconstruction"], arrays["ae_score"][:, None]]

    with pytest.raises(ArtifactError, match=r"output 'score' has shape \[64, 1\] for 64 inputs \(expected \[64\]\)"):
        golden_rows(Liar(), "ae", arrays, meta)


def test_write_metadata_refuses_what_the_runtime_would(art, tmp_path):
    from dataclasses import replace

    meta = artifacts.read_threshold(art)
    with pytest.raises(ArtifactError, match="field 'threshold'"):
        artifacts.write_metadata(tmp_path / TH, replace(meta, threshold=-1.0))
    with pytest.raises(ArtifactError, match="field 'image_shape'"):
        artifacts.write_metadata(tmp_path / TH, replace(meta, image_shape=(1, 1)))
    assert not (tmp_path / TH).exists()
    assert artifacts.write_metadata(tmp_path / TH, meta).to_json() == meta.to_json()


def test_checkpoint_binding(art):
    assert artifacts.checkpoint_path(art, artifacts.read_flow(art)) == art / "flow.pt"
    (art / "flow.pt").write_bytes((art / "ae.pt").read_bytes())
    with pytest.raises(ArtifactError, match="the checkpoint and the graph disagree"):
        artifacts.checkpoint_path(art, artifacts.read_flow(art))


def test_library_errors_name_arguments_the_cli_names_flags(art):
    from aeflow.runtime.providers import create_session, cuda_missing

    if not cuda_missing():
        pytest.skip("CUDA really runs here")
    with pytest.raises(DeviceError) as e:
        create_session(art / contract.AE_FILE, "cuda")
    assert 'device="cuda"' in e.value.message and "--device" not in e.value.message
    line = assert_one_line_error(run_cli("score", "--artifacts", str(art), "--device", "cuda"), 1)
    assert "--device cuda" in line and 'device="' not in line
    edit_metadata(art / TH, sha256="0" * 64)
    with pytest.raises(ArtifactError, match="verify=False"):
        AnomalyScorer(art)
    line = assert_one_line_error(run_cli("score", "--artifacts", str(art), "--device", "cpu"), 1)
    assert "--no-verify" in line and "verify=False" not in line


# ---------------------------------------------------------------- info and verify, without torch

def _flip_table_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the embedded table: the graph still loads
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, words", [
    (lambda d: _flip_table_byte(d / contract.SAMPLER_FILE), "flow_sampler.onnx: sha256"),
    (lambda d: _flip_table_byte(d / contract.INT8_FILE), "ae.int8.onnx: sha256"),
    (lambda d: edit_metadata(d / FL, _set("components.mu.0", 1.86), seal=False), "flow.json: contents do not match"),
    (lambda d: edit_metadata(d / TH, _set("int8.threshold", 0.5), seal=False), "threshold.json: contents do not match"),
    (lambda d: (d / TH).unlink(), "ae.onnx: threshold.json is missing beside it"),
    (lambda d: (d / FL).unlink(), "flow.onnx: flow.json is missing beside it"),
], ids=["sampler-graph", "int8-graph", "flow-json", "threshold-json", "threshold-json-deleted", "flow-json-deleted"])
def test_info_and_verify_fail_on_any_edit_without_torch(art, no_torch_env, damage, words):
    damage(art)
    line = assert_one_line_error(run_cli("info", "--artifacts", str(art), "--device", "cpu", env=no_torch_env), 1)
    assert words in line
    line = assert_one_line_error(run_cli("verify", "--artifacts", str(art), "--device", "cpu", env=no_torch_env), 1)
    assert words in line


def test_verify_without_torch_names_numerics(art, no_torch_env):
    _rewrite_golden(art, lambda a: a.__setitem__("flow_z", a["flow_z"] + np.float32(1e-3)))
    proc = run_cli("verify", "--artifacts", str(art), "--device", "cpu", env=no_torch_env)
    line = assert_one_line_error(proc, 1)
    assert line.startswith("aeflow: error: this machine's numerics differ: flow.onnx: z")
    assert "FAIL" in proc.stdout


# ---------------------------------------------------------------- any file of a folder damaged: one line

def _garbage(p):
    p.write_bytes(b"PK\x03\x04 not really a zip")


def _folder(p):
    p.unlink()
    p.mkdir()


def _no_images(p):
    buf = io.BytesIO()
    np.savez(buf, pictures=np.zeros((3, 28, 28), np.uint8))
    p.write_bytes(buf.getvalue())


@pytest.mark.parametrize("damage, words", [
    (_garbage, "demo.npz: cannot be read as .npz (BadZipFile)"),
    (lambda p: p.write_bytes(b""), "demo.npz: cannot be read as .npz"),
    (_no_images, "demo.npz: no array 'images'"),
    (_folder, "demo.npz: not a regular file"),
    (lambda p: p.write_bytes(np.zeros(8).tobytes()), "demo.npz: cannot be read as .npz"),
], ids=["garbage", "empty", "no-images", "folder", "raw-bytes"])
def test_verify_on_a_damaged_demo_set_is_one_line(art, damage, words):
    """issue 17: verify reads demo.npz for the checkpoint comparison; any damage is one line."""
    pytest.importorskip("torch")
    from aeflow.analysis.verify import verify_artifacts

    (art / "demo.npz").write_bytes((artifacts.bundled_dir() / "demo.npz").read_bytes())
    damage(art / "demo.npz")
    with pytest.raises(ArtifactError) as e:
        verify_artifacts(art, "cpu")
    assert words in e.value.message and "\n" not in e.value.message


@pytest.mark.parametrize("name, damage, words, kwargs", [
    (contract.GOLDEN_FILE, _garbage, "golden.npz: cannot be read as .npz", {"verify": False}),
    (contract.GOLDEN_FILE, lambda p: p.write_bytes(b""), "golden.npz: cannot be read as .npz", {"verify": False}),
    (contract.GOLDEN_FILE, _folder, "golden.npz: not a regular file", {}),
    (contract.AE_FILE, _folder, "ae.onnx: not a regular file", {}),
    (TH, _folder, "threshold.json: not a regular file", {}),
    (TH, lambda p: p.write_bytes(b""), "threshold.json: malformed JSON", {}),
], ids=["golden-garbage", "golden-empty", "golden-folder", "graph-folder", "json-folder", "json-empty"])
def test_any_damaged_artifact_file_is_one_line(art, name, damage, words, kwargs):
    damage(art / name)
    with pytest.raises(ArtifactError) as e:
        AnomalyScorer(art, device="cpu", **kwargs)
    assert words in e.value.message and "\n" not in e.value.message


def test_cli_verify_with_a_garbage_demo_set_and_checkpoint_folder(art, capfd):
    pytest.importorskip("torch")
    (art / "demo.npz").write_bytes(b"garbage")
    line = assert_one_line_error(run_cli("verify", "--artifacts", str(art), "--device", "cpu"), 1)
    assert "demo.npz: cannot be read as .npz" in line
    (art / "demo.npz").unlink()
    _folder(art / "flow.pt")  # the same path once more, in this process
    line = assert_one_line_error(invoke_cli("verify", "--artifacts", str(art), "--device", "cpu", capfd=capfd), 1)
    assert "flow.pt: not a regular file" in line
