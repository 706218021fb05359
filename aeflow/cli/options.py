"""The options aeflow's commands share, spelled one way for all; imports only click (a fast ``--help``)."""

from pathlib import Path

import click

DEVICES = ("auto", "cpu", "cuda")  # the same tuple as aeflow.runtime.providers.DEVICES (tested)

SHARED = {
    "artifacts": click.option("--artifacts", type=click.Path(path_type=Path), default=None,
                              help="Artifacts folder (ae.onnx, threshold.json, ...); default: the bundled one."),
    "device": click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                           help="Execution provider: cuda (strict), cpu, or auto (CUDA where it really runs)."),
    "batch_size": click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True,
                               help="Images per onnxruntime call."),
    "force": click.option("--force", is_flag=True, help="Overwrite existing output files."),
    "json": click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables."),
    "no_verify": click.option("--no-verify", is_flag=True, help="Load files even when their sha256 or golden "
                              "outputs do not match (not recommended)."),
    "quiet": click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
    "quiet_summary": click.option("-q", "--quiet", is_flag=True, help="No progress bars and no summary."),
}


def shared(*names: str):
    """One decorator adding the shared options ``names`` (keys of ``SHARED``), listed in that order."""
    def decorate(command):
        for name in reversed(names):
            command = SHARED[name](command)
        return command
    return decorate


def data_dir_option(help: str = "Folder of IDX files (mnist/, fashion-mnist/, kmnist/); default: download "
                                "with torchvision."):
    """``--data-dir DIR``."""
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=help)


def output_option(help: str, default: Path | None = None, file_okay: bool = True, spelled: bool = False):
    """``-o/--output PATH``: what the command writes; ``spelled``: the text as given (a str: a Path would drop
    the trailing separator that names a folder, which ``check_target`` refuses for a file)."""
    return click.option("-o", "--output", "output", type=click.Path(path_type=None if spelled else Path,
                                                                    file_okay=file_okay, readable=False),  # never read
                        default=default, show_default=default is not None, help=help)
