"""golden.npz: PyTorch's outputs on a fixed input set for every graph, recorded at export, which ``aeflow verify``
and the runtime's load-time check compare a provider with, without torch (arrays: ``artifacts.golden_arrays``)."""

from pathlib import Path

import numpy as np

from aeflow.datasets import to_float
from aeflow.export.reference import torch_ae, torch_flow
from aeflow.files import atomic_path
from aeflow.runtime import artifacts, contract, inversion
from aeflow.runtime.providers import create_session


def golden_images() -> np.ndarray:
    """32 normal digits and 32 anomalies of the bundled demo set, float32 [64, 1, 28, 28] in [0, 1]."""
    demo = artifacts.demo_images()
    half = contract.GOLDEN_IMAGES // 2
    return to_float(np.concatenate([demo[:half], demo[len(demo) // 2:len(demo) // 2 + half]]))


def golden_points() -> np.ndarray:
    """256 points for flow.onnx, float32: a grid over [-6, 6] and the tails out to +-50."""
    tails = np.array([6.5, 7, 8, 10, 12, 15, 20, 50], dtype=np.float64)
    return np.concatenate([np.linspace(-6, 6, contract.GOLDEN_POINTS - 2 * tails.size), -tails[::-1], tails]
                          ).astype(np.float32)


def golden_targets(comp: inversion.Components, sampler: dict, x_bracket: tuple[float, float]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """256 targets z spread evenly where flow_sampler.onnx promises 1e-5 (outside ``float64_z_intervals``, f' >=
    ``trusted_slope``) and their float64 preimages: (z float32 [256], x float64 [256])."""
    z = np.linspace(-comp.half_w, comp.half_w, 4098)[1:-1].astype(np.float32).astype(np.float64)
    x = inversion.polish64(comp, z, np.zeros_like(z), *x_bracket)
    keep = ~inversion.in_intervals(z, sampler["float64_z_intervals"]) & (comp.dz_dx(x) >= sampler["trusted_slope"])
    pick = np.linspace(0, keep.sum() - 1, contract.GOLDEN_POINTS).round().astype(np.int64)
    return z[keep][pick].astype(np.float32), x[keep][pick]


def write_golden(path: Path, ae, flow) -> None:
    """golden.npz at ``path`` (uncompressed, atomic): PyTorch's outputs of the staged ``ae`` on its golden_images
    (float32 [64, 1, H, W]) and ``flow`` on its golden_points (float32 [256]), either None; the int8 graph's on
    the CPU (its own integer arithmetic); the sampler's float64 targets; the validation scores (float32 [n])."""
    out = {}
    if ae is not None:
        rec, score = torch_ae(ae.model, ae.golden_images)
        out |= {"ae_images": ae.golden_images, "ae_reconstruction": rec, "ae_score": score,
                "validation_scores": ae.val_scores.astype(np.float32)}
        if ae.int8:
            int8 = create_session(path.parent / contract.INT8_FILE, "cpu")
            out["int8_reconstruction"], out["int8_score"] = int8.run(None, {"images": ae.golden_images})
    if flow is not None:
        out["flow_x"] = flow.golden_points
        out["flow_z"], out["flow_dz_dx"], out["flow_log_prob"] = torch_flow(flow.model, flow.golden_points)
        out["sampler_z"], out["sampler_x"] = golden_targets(flow.comp, flow.sampler, tuple(flow.x_bracket))
    with atomic_path(path, replace=True) as tmp, open(tmp, "wb") as f:
        np.savez(f, **out)
