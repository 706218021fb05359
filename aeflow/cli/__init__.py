"""The ``aeflow`` command line: a click group whose subcommands load lazily.

Each subcommand lives in its own module here (``aeflow.cli.score`` ...) and is imported only
when it runs or its help is shown (click's documented ``LazyGroup`` pattern), so ``aeflow
--help`` imports neither numpy nor onnxruntime. User mistakes end with one line on stderr and
exit code 2 (usage) or 1 (anything else); no traceback is printed for them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from aeflow import __version__
from aeflow.errors import AeflowError

# command name -> (module, attribute, one-line help shown by 'aeflow --help' without importing it)
COMMANDS = {
    "score": ("aeflow.cli.score", "command", "Score images with the autoencoder and flag anomalies."),
    "calibrate": ("aeflow.cli.calibrate", "command", "Set the threshold from your own normal images."),
    "sample": ("aeflow.cli.sample", "command", "Draw samples from the 1-D flow."),
    "info": ("aeflow.cli.info", "command", "Artifact metadata, hashes and the provider that really runs."),
    "verify": ("aeflow.cli.verify", "command", "Check this machine's outputs against the recorded golden outputs."),
    "evaluate": ("aeflow.cli.evaluate", "command", "Type I/II error and AUROC on whole data sets, HTML report."),
    "bench": ("aeflow.cli.bench", "command", "Benchmark scoring and sampling against PyTorch and peers."),
    "train": ("aeflow.cli.train", "command", "Train the homework's models (needs the train extra)."),
    "export": ("aeflow.cli.export", "command", "Export checkpoints to ONNX and JSON, checked against PyTorch."),
}


# library errors name arguments (device="cuda", verify=False); the command line names its flags
FLAG_WORDING = (('device="cpu" or "auto"', "--device cpu or auto"), ('device="cuda"', "--device cuda"),
                ('device="cpu"', "--device cpu"), ("verify=False", "--no-verify"), ("golden=False", "--no-verify"),
                ("artifacts=DIR", "--artifacts DIR"), ("data_dir=DIR", "--data-dir DIR"))


def cli_message(message: str) -> str:
    """An ``AeflowError`` message with the library's argument wording replaced by the CLI's flags."""
    for argument, flag in FLAG_WORDING:
        message = message.replace(argument, flag)
    return message


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand is used, and
    turns aeflow's and click's errors into one line and an exit code."""

    def list_commands(self, ctx):
        return [name for name, (module, _, _) in COMMANDS.items() if importlib.util.find_spec(module) is not None]

    def get_command(self, ctx, name):
        entry = COMMANDS.get(name)
        if entry is None or importlib.util.find_spec(entry[0]) is None:
            return None
        return getattr(importlib.import_module(entry[0]), entry[1])

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(self, args=None, prog_name=None, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name or "aeflow", standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            click.echo("aeflow: interrupted", err=True)
            sys.exit(130)
        except click.UsageError as e:
            cmd = e.ctx.command_path if e.ctx else "aeflow"
            click.echo(f"{cmd}: error: {' '.join(e.format_message().split())} (see '{cmd} --help')", err=True)
            sys.exit(2)
        except click.ClickException as e:
            click.echo(f"aeflow: error: {' '.join(e.format_message().split())}", err=True)
            sys.exit(e.exit_code)
        except AeflowError as e:
            click.echo(f"aeflow: error: {cli_message(e.message)}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("aeflow: interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="aeflow")
def cli():
    """aeflow: MNIST anomaly scoring and 1-D flow sampling with ONNX Runtime.

    \b
    Examples:
      aeflow score                      # score the bundled demo set
      aeflow sample -n 10000 -o samples.npy
      aeflow train ae --data-dir ../shared/data --epochs 200 -o runs/a
      aeflow export --data-dir ../shared/data -o runs/a
    """


def main() -> None:
    """Console-script entry point."""
    cli.main()


if __name__ == "__main__":
    main()
