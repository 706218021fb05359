"""``aeflow train ae`` and ``aeflow train flow`` (torch is imported only when they run)."""

import os
from pathlib import Path

import click

from aeflow.cli.options import data_dir_option, output_option, shared
from aeflow.errors import OutputError, UsageError
from aeflow.optional import require
from aeflow.targets import check_target


# what 'train flow' writes into its run folder, the checkpoint first
FLOW_FILES = ("flow.pt", "flow_data.png", "flow_loss.png", "flow_density.png", "flow_map.png")
_output = output_option("Run folder for the checkpoint and figures (export reads it from there).",
                        default=Path("runs/latest"), file_okay=False)


def _run_options(command):
    """``--seed``, ``-q`` and ``--force``: what both commands take last."""
    return click.option("--seed", type=int, default=0, show_default=True,
                        help="Seed of the split, init and shuffling.")(shared("quiet", "force")(command))


def _check_run(check, config, output: Path, names: tuple[str, ...], data, force: bool) -> None:
    """``check(config)``, its errors naming the fields as this command's options spell them; training writes
    ``names`` (the checkpoint first) into ``output``: never over one of them silently (a checkpoint, a figure),
    nor the bundled folder, nor the ``data`` files it reads."""
    check(config, {p.name: p.opts[-1] for p in click.get_current_context().command.params})
    check_target(output, "folder", force=True, inputs=data, names=names, parents=True)  # patterns too
    if not force and (taken := [n for n in names if os.path.lexists(os.path.join(os.path.abspath(output), n))]):
        raise OutputError(f"{output / taken[0]} exists; pass --force to overwrite it, or -o a new run folder")


@click.group("train")
def command():
    """Train the homework's models (needs the train extra)."""


@command.command("ae")
@click.option("--data", "data", multiple=True, help="Your normal images (any format 'aeflow score' reads; "
              "repeat for more files); default: MNIST from --data-dir.")
@data_dir_option()
@_output
@click.option("--epochs", type=int, default=10, show_default=True, help="Passes over the training set.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--batch-size", type=int, default=100, show_default=True, help="Images per step.")
@click.option("--val-fraction", type=float, default=1 / 6, help="Share held out for the threshold (default 1/6).")
@_run_options
def train_ae(data, data_dir, output, quiet, force, **fields):
    """Train the H*W-256-128-32 autoencoder (784-256-... on MNIST) with MSE.

    \b
    Examples:
      aeflow train ae --data-dir ../shared/data --epochs 100 -o runs/a
      aeflow train ae --data normal.npz --epochs 30 -o runs/mine
    """
    if data and data_dir:
        raise UsageError("--data names your images; --data-dir is MNIST's folder: pass one of them")
    require("torch", "train", "training")
    from aeflow.train.autoencoder import AEConfig, check_ae_config, train_autoencoder

    data = [str(Path(p).resolve()) for p in data] or None
    config = AEConfig(**fields, data_dir=data_dir and str(data_dir), data=data)
    _check_run(check_ae_config, config, output, ("ae.pt", "ae_loss.png"), data or (), force)
    hist = train_autoencoder(output, config, quiet, force)
    shape = "x".join(map(str, config.image_shape))
    click.echo(f"trained on {config.n_train} images of {shape} ({config.n_val} held out), {config.epochs} epochs: "
               f"final epoch loss {hist['epoch_loss'][-1]:.6f}")
    click.echo(f"wrote {output / 'ae.pt'} and {output / 'ae_loss.png'}")


@command.command("flow")
@click.option("--data", type=click.Path(dir_okay=False), multiple=True,
              help="Your real values (1-D .npy, CSV or Parquet column, text of one value a line); "
                   "default: the three-Gaussian mixture. 1/6 is held out.")
@click.option("--column", default=None, help="The column to read from a CSV or Parquet file.")
@_output
@click.option("--components", "n_components", type=int, default=5, show_default=True, help="Number of Gaussian CDFs K.")
@click.option("--epochs", type=int, default=100, show_default=True, help="Passes over the training set.")
@click.option("--lr", type=float, default=5e-2, show_default=True, help="Adam learning rate.")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Points per step.")
@click.option("--n-train", type=int, default=5000, show_default=True, help="Training points from the mixture.")
@click.option("--n-test", type=int, default=1000, show_default=True, help="Test points from the mixture.")
@_run_options
def train_flow_cmd(data, output, quiet, force, **fields):
    """Train the 1-D flow by maximum likelihood on the three-Gaussian mixture or your values.

    \b
    Examples:
      aeflow train flow -o runs/a
      aeflow train flow --data sensor.csv --column temperature -o runs/mine
    """
    values = _values_file(data)
    require("torch", "train", "training")
    from aeflow.train.flow import FlowConfig, check_flow_config, train_flow

    config = FlowConfig(**fields, data=values)
    _check_run(check_flow_config, config, output, FLOW_FILES, [values] if values else (), force)
    hist = train_flow(output, config, quiet, force)
    held = f" ({config.n_test} of {config.n_train + config.n_test} values held out)" if values else ""
    click.echo(f"final NLL: train {hist['train_nll'][-1]:.4f}, test {hist['test_nll'][-1]:.4f}{held}")
    click.echo(f"wrote {output / 'flow.pt'} and the flow_*.png figures in {output}")


def _values_file(data: tuple[str, ...]) -> str | None:
    """``train flow``'s one --data file (absolute), or None; the mixture's --n-train / --n-test refused beside it."""
    if len(data) > 1:  # click would keep the last one silently
        raise UsageError(f"--data names one file of values for the flow, got {len(data)} ({', '.join(data)})")
    given = [f"--{f.replace('_', '-')}" for f in ("n_train", "n_test")
             if click.get_current_context().get_parameter_source(f).name == "COMMANDLINE"]
    if data and given:
        raise UsageError(f"{' and '.join(given)} {'size' if len(given) > 1 else 'sizes'} the mixture's sets; with "
                         f"--data, 1/6 of your values is held out")
    return str(Path(data[0]).resolve()) if data else None
