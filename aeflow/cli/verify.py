"""``aeflow verify``: the ONNX graphs against their PyTorch originals on this machine's provider."""

from __future__ import annotations

import json

import click
import numpy as np

from aeflow.datasets import to_float
from aeflow.errors import ParityError, UsageError
from aeflow.parity import Comparison, compare, flow_check_points, format_table
from aeflow.runtime.contract import (AE_SIGNATURE, FLOW_SIGNATURE, artifacts_dir, check_signature, demo_images,
                                      read_flow_metadata, read_threshold)
from aeflow.cli.options import artifacts_option, device_option, json_option, no_verify_option
from aeflow.runtime.providers import create_session, provider_of

DECISION_MARGIN = 1e-6


def run_parity(artifacts=None, device: str = "auto", verify: bool = True) -> tuple[str, list[Comparison]]:
    """Compare ae.onnx and flow.onnx (on ``device``) with the checkpoints ae.pt and flow.pt.

    Returns the provider that ran and one Comparison per output: reconstruction, score, the
    anomaly decisions (identical except within 1e-6 of the threshold), z, dz_dx, log_prob."""
    try:
        from aeflow.export.reference import load_autoencoder, load_flow, torch_ae, torch_flow
    except ImportError:
        raise UsageError("verify compares against PyTorch: pip install 'aeflow[train]'") from None
    directory = artifacts_dir(artifacts)
    th = read_threshold(directory, verify)
    fm = read_flow_metadata(directory, verify)
    ae = create_session(th["onnx_path"], device)
    check_signature(ae, AE_SIGNATURE, th["onnx_path"].name)
    flow_sess = create_session(fm["onnx_path"], device)
    check_signature(flow_sess, FLOW_SIGNATURE, fm["onnx_path"].name)

    images = to_float(demo_images(directory))
    model, _ = load_autoencoder(directory / "ae.pt")
    t_rec, t_score = torch_ae(model, images)
    recs, scores = [], []
    for i in range(0, len(images), 500):
        r, s = ae.run(None, {"images": images[i:i + 500]})
        recs.append(r)
        scores.append(s)
    rec, score = np.concatenate(recs), np.concatenate(scores)
    t = th["threshold"]
    clear = np.abs(t_score.astype(np.float64) - t) > DECISION_MARGIN
    disagree = int(np.sum((score[clear] > t) != (t_score[clear] > t)))
    rows = [compare("reconstruction", rec, t_rec), compare("score", score, t_score),
            Comparison("decisions", int(clear.sum()), float(disagree), float(disagree), 0.0, 0.0, disagree == 0)]

    flow, _ = load_flow(directory / "flow.pt")
    x = flow_check_points()
    z, dz, lp = flow_sess.run(None, {"x": x})
    tz, tdz, tlp = torch_flow(flow, x)
    rows += [compare("z", z, tz), compare("dz_dx", dz, tdz), compare("log_prob", lp, tlp)]
    return provider_of(ae), rows


@click.command("verify")
@artifacts_option
@device_option
@no_verify_option
@json_option
def command(artifacts, device, no_verify, as_json):
    """Run the ONNX graphs and their PyTorch checkpoints on the same inputs and compare.

    Needs the train extra (PyTorch). Exits 1 when any output is beyond its tolerance.
    Run this on new hardware before trusting it.

    \b
    Example:
      aeflow verify --device cuda
    """
    provider, rows = run_parity(artifacts, device, not no_verify)
    if as_json:
        click.echo(json.dumps({"provider": provider, "passed": all(r.passed for r in rows),
                               "outputs": [r.__dict__ | {"tolerance": r.tolerance} for r in rows]}, indent=2))
    else:
        click.echo(format_table(rows, f"ONNX Runtime ({provider}) vs PyTorch (CPU)"))
    failed = [r.name for r in rows if not r.passed]
    if failed:
        raise ParityError(f"{', '.join(failed)} beyond tolerance on {provider}; do not deploy these graphs on this machine")
    if not as_json:
        click.echo(f"all {len(rows)} outputs within tolerance on {provider}")
