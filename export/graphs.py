"""Writing the two models as self-contained ONNX graphs (dynamo exporter, no side files)."""

from __future__ import annotations

import contextlib
import io
import os
import warnings

import onnx
import torch

from aeflow.errors import ArtifactError
from aeflow.train.models import Autoencoder, Flow1d, ScoringAutoencoder

AE_INPUTS, AE_OUTPUTS = ["images"], ["reconstruction", "score"]
FLOW_INPUTS, FLOW_OUTPUTS = ["x"], ["z", "dz_dx", "log_prob"]


def _drop_stack_traces(model: onnx.ModelProto) -> None:
    """Remove the exporter's per-node Python stack traces: they hold the absolute paths of the
    checkout that exported, so the same weights would give graphs (and sha256s) that differ
    from one folder to the next."""
    for node in model.graph.node:
        keep = [p for p in node.metadata_props if "stack_trace" not in p.key]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)


def _export(module: torch.nn.Module, example: torch.Tensor, path: str | os.PathLike,
            input_names: list[str], output_names: list[str], opset: int | None) -> int:
    """Export with a dynamic batch dimension, check the file, return its opset."""
    module.eval()
    dynamic = {input_names[0]: {0: torch.export.Dim("N")}}
    # the exporter chats on stdout and warns about things that do not apply here
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=input_names, output_names=output_names,
                          dynamic_shapes=dynamic, opset_version=opset, external_data=False, dynamo=True)
    model = onnx.load(str(path))
    _drop_stack_traces(model)
    onnx.save(model, str(path))
    onnx.checker.check_model(model, full_check=True)
    if os.path.exists(f"{path}.data"):
        raise ArtifactError(f"{path}: the exporter wrote a side .onnx.data file; expected a self-contained graph")
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def export_autoencoder(model: Autoencoder, path: str | os.PathLike, opset: int | None = None) -> int:
    """Write ae.onnx: ``images`` float32 [N, 1, H, W] -> ``reconstruction`` [N, 1, H, W]
    and ``score`` [N] (per-image mean squared error), (H, W) the model's ``image_shape``. Returns the opset."""
    return _export(ScoringAutoencoder(model), torch.rand(4, 1, *model.image_shape), path, AE_INPUTS, AE_OUTPUTS, opset)


def export_flow(flow: Flow1d, path: str | os.PathLike, opset: int | None = None) -> int:
    """Write flow.onnx: ``x`` float32 [N] -> ``z``, ``dz_dx``, ``log_prob`` each [N]. Returns the opset."""
    return _export(flow, torch.linspace(-3, 3, 8), path, FLOW_INPUTS, FLOW_OUTPUTS, opset)
