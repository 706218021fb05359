"""The ``aeflow`` command line: a click group whose commands live beside what they drive.

User mistakes end with one line on stderr and exit code 2 (usage) or 1 (anything else); no
traceback is printed for them.
"""

from __future__ import annotations

import sys

import click

from aeflow import __version__
from aeflow.errors import AeflowError


class AeflowGroup(click.Group):
    """A group that turns aeflow's and click's errors into one line and an exit code."""

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
            click.echo(f"aeflow: error: {e.message}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("aeflow: interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=AeflowGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="aeflow")
def cli():
    """aeflow: MNIST anomaly scoring and 1-D flow sampling with ONNX Runtime.

    \b
    Examples:
      aeflow score                      # score the bundled demo set
      aeflow sample -n 10000 -o samples.npy
      aeflow train ae --data-dir ../shared/data --epochs 200
      aeflow export --data-dir ../shared/data
    """


def _register() -> None:
    from aeflow.export.commands import export_cmd
    from aeflow.train.commands import train

    cli.add_command(train)
    cli.add_command(export_cmd)
    try:
        from aeflow.runtime.commands import register
    except ImportError:
        return
    register(cli)


_register()


def main() -> None:
    """Console-script entry point."""
    cli.main()


if __name__ == "__main__":
    main()
