"""``aeflow train ae`` and ``aeflow train flow`` (torch is imported only when they run)."""

from __future__ import annotations

from pathlib import Path

import click

from aeflow.errors import UsageError

_data_dir = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help="Folder of IDX files (mnist/, fashion-mnist/, kmnist/); default: download with torchvision.")
_out = click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("artifacts"),
                    show_default=True, help="Folder for the checkpoint and figures.")
_seed = click.option("--seed", type=int, default=0, show_default=True, help="Seed for the split, the init and the shuffling.")
_quiet = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")


def _positive(name: str, value) -> None:
    if value <= 0:
        raise UsageError(f"{name} must be positive, got {value}")


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("training needs PyTorch: pip install 'aeflow[train]'") from None


@click.group()
def train():
    """Train the homework's models (needs the train extra)."""


@train.command("ae")
@_data_dir
@_out
@click.option("--epochs", type=int, default=10, show_default=True, help="Passes over the training set.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--batch-size", type=int, default=100, show_default=True, help="Images per step.")
@_seed
@_quiet
def train_ae(data_dir, out_dir, epochs, lr, batch_size, seed, quiet):
    """Train the 784-256-128-32 autoencoder on MNIST with MSE.

    \b
    Example:
      aeflow train ae --data-dir ../shared/data --epochs 100 --out artifacts
    """
    for name, v in (("--epochs", epochs), ("--lr", lr), ("--batch-size", batch_size)):
        _positive(name, v)
    _need_torch()
    from aeflow.train.autoencoder import AEConfig, train_autoencoder

    config = AEConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                      data_dir=str(data_dir) if data_dir else None)
    path = train_autoencoder(out_dir, config, quiet)
    from aeflow.train.checkpoint import load_checkpoint

    hist = load_checkpoint(path, "autoencoder")["history"]
    click.echo(f"trained on {config.n_train} images ({config.n_val} held out), {epochs} epochs: "
               f"final epoch loss {hist['epoch_loss'][-1]:.6f}")
    click.echo(f"wrote {path} and {out_dir / 'ae_loss.png'}")


@train.command("flow")
@_out
@click.option("--components", "n_components", type=int, default=5, show_default=True, help="Number of Gaussian CDFs K.")
@click.option("--epochs", type=int, default=100, show_default=True, help="Passes over the training set.")
@click.option("--lr", type=float, default=5e-2, show_default=True, help="Adam learning rate.")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Points per step.")
@click.option("--n-train", type=int, default=5000, show_default=True, help="Training points from the mixture.")
@click.option("--n-test", type=int, default=1000, show_default=True, help="Test points from the mixture.")
@_seed
@_quiet
def train_flow_cmd(out_dir, n_components, epochs, lr, batch_size, n_train, n_test, seed, quiet):
    """Train the 1-D flow on the three-Gaussian mixture by maximum likelihood.

    \b
    Example:
      aeflow train flow --out artifacts
    """
    for name, v in (("--components", n_components), ("--epochs", epochs), ("--lr", lr),
                    ("--batch-size", batch_size), ("--n-train", n_train), ("--n-test", n_test)):
        _positive(name, v)
    _need_torch()
    from aeflow.train.checkpoint import load_checkpoint
    from aeflow.train.flow import FlowConfig, train_flow

    config = FlowConfig(n_components=n_components, epochs=epochs, lr=lr, batch_size=batch_size,
                        n_train=n_train, n_test=n_test, seed=seed)
    path = train_flow(out_dir, config, quiet)
    hist = load_checkpoint(path, "flow")["history"]
    click.echo(f"final NLL: train {hist['train_nll'][-1]:.4f}, test {hist['test_nll'][-1]:.4f}")
    click.echo(f"wrote {path} and the flow_*.png figures in {out_dir}")
