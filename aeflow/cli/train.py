"""``aeflow train ae`` and ``aeflow train flow`` (torch is imported only when they run)."""

from __future__ import annotations

from pathlib import Path

import click

from aeflow.cli.options import data_dir_option, force_option, output_option, quiet_option
from aeflow.errors import OutputError, UsageError
from aeflow.files import check_target

_data_dir = data_dir_option()
_out = output_option("Run folder for the checkpoint and figures (export reads it from there).",
                     default=Path("artifacts"), file_okay=False)
_seed = click.option("--seed", type=int, default=0, show_default=True, help="Seed for the split, the init and the shuffling.")


# the config fields as the options spell them, for the one-line errors of the config checks
FLAGS = {"epochs": "--epochs", "lr": "--lr", "batch_size": "--batch-size", "seed": "--seed",
         "n_components": "--components", "n_train": "--n-train", "n_test": "--n-test"}


def _refuse_overwrite(output: Path, name: str, force: bool) -> None:
    """Training never replaces a checkpoint silently (the bundled ones included)."""
    check_target(output, "folder", force=True, bundled_ok=True, parents=True)
    path = output / name
    if path.exists() and not force:
        raise OutputError(f"{path} exists; pass --force to overwrite it, or -o a new run folder")


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("training needs PyTorch: pip install 'aeflow[train]'") from None


@click.group("train")
def command():
    """Train the homework's models (needs the train extra)."""


@command.command("ae")
@_data_dir
@_out
@click.option("--epochs", type=int, default=10, show_default=True, help="Passes over the training set.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--batch-size", type=int, default=100, show_default=True, help="Images per step.")
@_seed
@quiet_option
@force_option
def train_ae(data_dir, output, epochs, lr, batch_size, seed, quiet, force):
    """Train the 784-256-128-32 autoencoder on MNIST with MSE.

    \b
    Example:
      aeflow train ae --data-dir ../shared/data --epochs 100 -o runs/a
    """
    _need_torch()
    from aeflow.train.autoencoder import AEConfig, check_ae_config, train_autoencoder

    config = AEConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                      data_dir=str(data_dir) if data_dir else None)
    check_ae_config(config, FLAGS)
    _refuse_overwrite(output, "ae.pt", force)
    path = train_autoencoder(output, config, quiet, force)
    from aeflow.train.checkpoint import load_checkpoint

    hist = load_checkpoint(path, "autoencoder")["history"]
    click.echo(f"trained on {config.n_train} images ({config.n_val} held out), {epochs} epochs: "
               f"final epoch loss {hist['epoch_loss'][-1]:.6f}")
    click.echo(f"wrote {path} and {output / 'ae_loss.png'}")


@command.command("flow")
@_out
@click.option("--components", "n_components", type=int, default=5, show_default=True, help="Number of Gaussian CDFs K.")
@click.option("--epochs", type=int, default=100, show_default=True, help="Passes over the training set.")
@click.option("--lr", type=float, default=5e-2, show_default=True, help="Adam learning rate.")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Points per step.")
@click.option("--n-train", type=int, default=5000, show_default=True, help="Training points from the mixture.")
@click.option("--n-test", type=int, default=1000, show_default=True, help="Test points from the mixture.")
@_seed
@quiet_option
@force_option
def train_flow_cmd(output, n_components, epochs, lr, batch_size, n_train, n_test, seed, quiet, force):
    """Train the 1-D flow on the three-Gaussian mixture by maximum likelihood.

    \b
    Example:
      aeflow train flow -o runs/a
    """
    _need_torch()
    from aeflow.train.checkpoint import load_checkpoint
    from aeflow.train.flow import FlowConfig, check_flow_config, train_flow

    config = FlowConfig(n_components=n_components, epochs=epochs, lr=lr, batch_size=batch_size,
                        n_train=n_train, n_test=n_test, seed=seed)
    check_flow_config(config, FLAGS)
    _refuse_overwrite(output, "flow.pt", force)
    path = train_flow(output, config, quiet, force)
    hist = load_checkpoint(path, "flow")["history"]
    click.echo(f"final NLL: train {hist['train_nll'][-1]:.4f}, test {hist['test_nll'][-1]:.4f}")
    click.echo(f"wrote {path} and the flow_*.png figures in {output}")
