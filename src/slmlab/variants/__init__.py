"""Architecture variants: small modules that plug into the decoder's extension points.

Each builder in ATTENTION_EXTENSION_BUILDERS maps (ModelConfig, layer) to an attention extension
module, or None when the config does not ask for it; the decoder collects what they return.
"""

from __future__ import annotations

from .smat import build_smat

ATTENTION_EXTENSION_BUILDERS = [build_smat]
