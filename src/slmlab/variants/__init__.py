"""Architecture variants: small modules that plug into the decoder's extension points.

Each builder in ATTENTION_EXTENSION_BUILDERS maps (ModelConfig, layer) to an attention extension
module, or None when the config does not ask for it; the decoder collects what they return.
Each builder in CONDITIONING_BUILDERS maps a ModelConfig to the decoder's residual conditioning
(or None); the first that returns a module is used.
"""

from __future__ import annotations

from .self_area import build_self_area
from .smat import build_smat

ATTENTION_EXTENSION_BUILDERS = [build_smat]
CONDITIONING_BUILDERS = [build_self_area]
