"""Optional imports: a module from one of aeflow's extras, or one line saying which extra to install.

    pa = require("pyarrow", "distributed", "reading Parquet files")
    # missing -> UsageError: reading Parquet files needs pyarrow: pip install 'aeflow[distributed]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from aeflow.errors import UsageError


def require(module: str, extra: str | None, what: str) -> ModuleType:
    """The imported ``module`` (a dotted name), or ``UsageError`` in one line naming ``what`` needs
    it and the install command: ``pip install 'aeflow[EXTRA]'``, or ``pip install PACKAGE`` when
    ``extra`` is None (a dependency of aeflow itself that went missing)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        package = {"PIL": "pillow", "dask": "'dask[distributed]'"}.get(top, top)
        how = f"pip install 'aeflow[{extra}]'" if extra else f"pip install {package}"
        raise UsageError(f"{what} needs {package.strip(chr(39))}, which is not installed: {how}") from None
