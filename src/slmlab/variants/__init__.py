"""The built-in ideas, one file each, registered through the same calls a user's plugin makes:
SMAT (attention extension + interventions), SMT's Self Area (residual conditioning + stage-2
parameter selections), the TapeTransformer (a whole architecture) and its notebook's Wolf optimizer.

Every module in this folder is imported (in name order) when the package is: a new idea is one
new file here, with no list to edit."""

import importlib
import pkgutil

__all__ = sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))
for _name in __all__:
    importlib.import_module(f"{__name__}.{_name}")
