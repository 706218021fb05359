"""Registers the runtime's commands (score, sample, info, verify, bench, evaluate) on the CLI."""

from __future__ import annotations

import importlib
import importlib.util

import click

COMMAND_MODULES = ("score_command", "sample_command", "info_command", "verify_command",
                   "bench_command", "evaluate_command")


def register(cli: click.Group) -> None:
    """Add every runtime command module's ``command`` to ``cli``."""
    for name in COMMAND_MODULES:
        module_name = f"aeflow.runtime.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        cli.add_command(importlib.import_module(module_name).command)
