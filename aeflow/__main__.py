"""``python -m aeflow``: the command line."""

from aeflow.cli import main

main()
