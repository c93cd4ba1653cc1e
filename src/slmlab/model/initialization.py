"""Initial weights drawn by name: common random numbers across the variants of a sweep.

Each module the architecture initialises draws its random tensors from a generator of its own,
seeded by the model's init seed and the module's qualified name (`blocks.2.mlp.fc`):

    generator(name) = torch.Generator().manual_seed(sha256(f"{init_seed}:{name}")[:8] mod 2^63)

So two variants built under one `torch.manual_seed` start from the same weights wherever they
have a module of the same name and shape, whatever else either builds or draws in between (SMAT's
score and gate modules, the Self Area, a plugin's gate). A sweep pairs its variants by seed: with
shared weights the paired difference measures the idea rather than also two unrelated initial
draws (docs/verdicts.md gives the measured gain in power).

The init seed is one draw from torch's global generator per model, made by `registry.build_model`
before it builds any module, so its value does not depend on what a variant builds
(`registry.init_seed`; an architecture built directly draws it when it asks).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn

from ..registry import init_seed


def generator_for(seed: int, name: str, device: torch.device) -> torch.Generator:
    """The generator of module `name`'s initial draws under init seed `seed`."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") % 2**63)


def init_by_name(model: nn.Module, init: Callable[[nn.Module, torch.Generator], None], skip: set[int]) -> None:
    """init(module, its generator) for every module of `model` whose id is not in `skip`, each
    with the generator of its qualified name. Modules on the meta device hold no values to draw."""
    seed = init_seed()
    for name, module in model.named_modules():
        if id(module) in skip:
            continue
        tensor = next(module.parameters(recurse=False), None)
        if tensor is None or tensor.is_meta:
            continue
        init(module, generator_for(seed, name, tensor.device))
