"""The built-in ideas, one file each, registered through the same calls a user's plugin makes:
SMAT (attention extension + interventions), SMT's Self Area (residual conditioning + stage-2
parameter selections), the TapeTransformer (a whole architecture + the Wolf optimizer)."""

from . import self_area, smat, tape

__all__ = ["self_area", "smat", "tape"]
