"""Optional imports: a module from one of aeflow's extras, or one line naming what to install."""

import importlib
from types import ModuleType

from aeflow.errors import UsageError


def require(module: str, extra: str | None, what: str) -> ModuleType:
    """The imported ``module``, or a one-line ``UsageError``: ``what`` needs it, ``pip install
    'aeflow[EXTRA]'`` (``pip install PACKAGE`` when ``extra`` is None: a dependency of aeflow itself)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"PIL": "pillow"}.get(module.split(".")[0], module.split(".")[0])
        how = f"pip install 'aeflow[{extra}]'" if extra else f"pip install {package}"
        raise UsageError(f"{what} needs {package}, which is not installed: {how}") from None
