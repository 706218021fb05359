"""``load_graph``, how the runtime opens every graph: sha256, session, signature and the golden check (this
machine's outputs against golden.npz's, ``aeflow.parity``'s tolerances: other numerics caught before any result)."""

from pathlib import Path

import numpy as np

from aeflow.errors import ArtifactError, ParityError
from aeflow.parity import Comparison, compare
from aeflow.runtime import artifacts, contract
from aeflow.runtime.providers import create_session, provider_of


def golden_rows(session, which: str, arrays: dict[str, np.ndarray], meta) -> list[Comparison]:
    """Graph ``which`` (``session``) on its golden inputs: one Comparison per output (for flow.onnx also the
    components' float64 z) against the recorded one; ``ArtifactError`` for a wrong shape."""
    names, sig = contract.GRAPHS[which].golden, meta.entry(which).graph.signature
    inputs, rows = arrays[names[0]], []
    outputs = session.run(None, {next(iter(sig["inputs"])): inputs})
    for name, output, got in zip(names[1:], sig["outputs"], outputs):
        want = arrays[name]
        if got.shape != want.shape:
            raise ArtifactError(f"{contract.GRAPHS[which].file}: output {output!r} has shape {list(got.shape)} for "
                                f"{len(inputs)} inputs (expected {list(want.shape)}); this graph breaks the artifact "
                                f"contract - re-export")
        # a row is named by its output as aeflow.parity.TOLERANCES keys them (and verify's table shows them)
        row = "sample" if which == "sampler" else f"int8 {output}" if which == "int8" else output
        # samples of a flow fitted at another scale: sampler_graph's x tolerance is in the data's units
        rows.append(compare(row, got, want, atol=meta.sampler.check["x_tolerance"] if which == "sampler" else None))
    if which == "flow":
        rows.append(compare("components z", meta.components.z(inputs.astype(np.float64)), arrays["flow_z"]))
    return rows


def load_graph(directory: Path, meta, which: str, device: str = "auto", threads: int | None = None,
               spinning: bool = True, verify: bool = True, golden: bool = True):
    """An onnxruntime session of graph ``which`` (a key of ``contract.GRAPHS``) in ``directory`` (``meta``: its
    checked metadata): sha256 (unless ``verify`` is False), signature, and the golden check (unless ``golden``
    is False; ``ParityError`` for the first row beyond tolerance)."""
    path = artifacts.graph_path(directory, meta, which, verify)
    session = create_session(path, device, threads, spinning)
    artifacts.check_signature(session, meta.entry(which).graph.signature, path.name)
    rows = golden_rows(session, which, artifacts.read_golden(directory, meta, which, verify), meta) if golden else []
    for row in (r for r in rows if not r.passed):
        if row.name == "components z":
            raise ArtifactError(f"{contract.GRAPHS[which].metadata}: its components do not reproduce {path.name} "
                                f"(max |z| diff {row.max_abs:.2e}); the metadata and the graph disagree - re-export")
        raise ParityError(f"{path.name} on {provider_of(session)}: {row.name} differs from the golden outputs "
                          f"recorded at export (max abs diff {row.max_abs:.2e}, tolerance {row.tolerance}); this "
                          f"machine's numerics differ - run 'aeflow verify' for the table, or pass golden=False "
                          f"to load anyway")
    return session
