"""Click options shared by the runtime's commands."""

from __future__ import annotations

from pathlib import Path

import click

from aeflow.runtime.providers import DEVICES

artifacts_option = click.option(
    "--artifacts", "artifacts", type=click.Path(path_type=Path), default=None,
    help="Artifacts folder (ae.onnx, threshold.json, ...); default: the bundled one.")
device_option = click.option(
    "--device", type=click.Choice(DEVICES), default="auto", show_default=True,
    help="Execution provider: cuda (strict), cpu, or auto (CUDA where it really runs).")
no_verify_option = click.option(
    "--no-verify", is_flag=True, help="Load graphs even when their sha256 does not match the JSON.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
