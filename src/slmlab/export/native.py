"""Native Hugging Face layouts: the slmlab models that *are* GPT-2 or Llama, weight for weight.

    gpt2:  learned positions, LayerNorm with bias, tanh-GELU MLP, biases, full causal attention,
           linear head (tied or not), nothing else  ->  GPT2LMHeadModel
           (Conv1D keeps weights as (in, out): every Linear weight is transposed; c_attn is our
           fused qkv, whose q | k | v rows GPT-2 splits the same way)
    llama: RoPE on the whole head (rope_fraction 1; rotate-half layout, θ_i = θ^(-2i/D), linear
           scaling as rope_type "linear"), RMSNorm, SwiGLU, full causal attention, linear head
           ->  LlamaForCausalLM (q/k/v split out of the fused qkv; attention_bias = mlp_bias =
           model.bias)

`native_layout(model)` decides from the built modules themselves (classes and parameter names),
so a plugin that adds a parameter or replaces a module is never exported as something it is not:
it says why not instead, and the export falls back to remote code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..model.attention import FullCausal
from ..model.decoder import Decoder, NoConditioning
from ..model.heads import LinearHead
from ..model.layers import MLP, SwiGLU
from ..model.positions import LearnedPositions, RotaryPositions


@dataclass
class NativeLayout:
    """A native export: the transformers config and the state dict in its names."""

    kind: str  # "gpt2" | "llama"
    config: object
    state_dict: dict[str, torch.Tensor]


def _backbone_reason(model: nn.Module) -> str:
    """'' if `model` is the plain backbone (no extensions, conditioning, local patterns), else why not."""
    if type(model) is not Decoder:
        return f"its architecture is '{model.cfg.arch}', not the plain decoder"
    if not isinstance(model.conditioning, NoConditioning):
        return "it has residual conditioning (a Self Area)"
    for layer, block in enumerate(model.blocks):
        if len(block.attn.extensions):
            names = ", ".join(type(e).__name__ for e in block.attn.extensions)
            return f"layer {layer}'s attention has extensions ({names})"
        if type(block.attn.pattern) is not FullCausal:
            return f"layer {layer} uses the '{type(block.attn.pattern).__name__}' attention pattern, not full causal attention"
    if type(model.head) is not LinearHead:
        return f"its head is '{model.cfg.head}', not linear"
    return ""


def _layout_reason(model: nn.Module, kind: str) -> str:
    reason = _backbone_reason(model)
    if reason:
        return reason
    cfg, blocks = model.cfg, list(model.blocks)
    if kind == "gpt2":
        if type(model.positions) is not LearnedPositions:
            return f"GPT-2 has learned positions; this model has '{cfg.pos}'"
        if not cfg.bias:
            return "GPT-2 has biases everywhere; this model has model.bias = false"
        norms = [model.norm_f, *(n for b in blocks for n in (b.ln1, b.ln2))]
        if any(type(n) is not nn.LayerNorm for n in norms):
            return f"GPT-2 has LayerNorm; this model has '{cfg.norm}'"
        if any(type(b.mlp) is not MLP for b in blocks):
            return f"GPT-2 has the tanh-GELU MLP; this model has '{cfg.mlp}'"
        return ""
    if type(model.positions) is not RotaryPositions:
        return f"Llama has RoPE; this model has '{cfg.pos}' positions"
    if model.positions.rotary_dim != cfg.head_dim:
        return f"Llama rotates whole heads; this model rotates {model.positions.rotary_dim} of {cfg.head_dim} dimensions (model.rope_fraction {cfg.rope_fraction})"
    norms = [model.norm_f, *(n for b in blocks for n in (b.ln1, b.ln2))]
    if any(type(n) is not nn.RMSNorm for n in norms):
        return f"Llama has RMSNorm; this model has '{cfg.norm}'"
    if any(type(b.mlp) is not SwiGLU for b in blocks):
        return f"Llama has the SwiGLU MLP; this model has '{cfg.mlp}'"
    return ""


def _gpt2(model: nn.Module) -> NativeLayout:
    from transformers import GPT2Config

    cfg = model.cfg
    config = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=cfg.ff_dim,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=None,
        eos_token_id=None,
        architectures=["GPT2LMHeadModel"],
    )
    linears = (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"), ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj"))
    names = {"wte.weight": "transformer.wte.weight", "positions.wpe.weight": "transformer.wpe.weight"}
    names |= {f"norm_f.{p}": f"transformer.ln_f.{p}" for p in ("weight", "bias")}
    names["head.weight"] = "lm_head.weight"
    names |= _per_layer(cfg.n_layer, "transformer.h.{}.", (("ln1", "ln_1"), ("ln2", "ln_2"), *linears))
    transposed = {f"blocks.{i}.{ours}.weight" for i in range(cfg.n_layer) for ours, _ in linears}  # Conv1D: (in, out)
    state = _renamed(model, names, transposed)
    return NativeLayout("gpt2", config, state)


def _llama(model: nn.Module) -> NativeLayout:
    from transformers import LlamaConfig

    cfg = model.cfg
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scale != 1.0:
        rope = {"rope_type": "linear", "factor": cfg.rope_scale, "rope_theta": cfg.rope_theta}
    config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=model.blocks[0].mlp.gate.out_features,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_head,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.block_size,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters=rope,
        attention_bias=cfg.bias,
        mlp_bias=cfg.bias,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=None,
        eos_token_id=None,
        architectures=["LlamaForCausalLM"],
    )
    names = {"wte.weight": "model.embed_tokens.weight", "norm_f.weight": "model.norm.weight", "head.weight": "lm_head.weight"}
    pairs = (
        ("ln1", "input_layernorm"),
        ("ln2", "post_attention_layernorm"),
        ("attn.proj", "self_attn.o_proj"),
        ("mlp.gate", "mlp.gate_proj"),
        ("mlp.up", "mlp.up_proj"),
        ("mlp.down", "mlp.down_proj"),
    )
    names |= _per_layer(cfg.n_layer, "model.layers.{}.", pairs)
    split = {  # the fused qkv, cut into Llama's three projections
        f"blocks.{i}.attn.qkv.{p}": [f"model.layers.{i}.self_attn.{x}_proj.{p}" for x in "qkv"]
        for i in range(cfg.n_layer)
        for p in ("weight", "bias")
    }
    state = _renamed(model, names, set(), split)
    return NativeLayout("llama", config, state)


def _per_layer(n_layer: int, theirs: str, pairs) -> dict[str, str]:
    """{our name: theirs} of each block's (our module, their module) pairs, weight and bias
    (a bias that does not exist is simply never looked up); `theirs` formats the layer index."""
    return {
        f"blocks.{i}.{ours}.{p}": f"{theirs.format(i)}{module}.{p}"
        for i in range(n_layer)
        for ours, module in pairs
        for p in ("weight", "bias")
    }


def _renamed(model: nn.Module, names: dict, transposed: set, split: dict | None = None) -> dict[str, torch.Tensor]:
    """The model's state dict in Hugging Face's names: each of our tensors renamed (transposed, or
    cut in three along dim 0 for `split`); a tensor with no place is an error, never dropped."""
    split = split or {}
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().float().contiguous()
        if name in split:
            for target, part in zip(split[name], tensor.chunk(3, dim=0)):
                state[target] = part.clone()
        elif name in names:
            state[names[name]] = (tensor.t() if name in transposed else tensor).contiguous().clone()
        else:
            raise ValueError(f"parameter '{name}' has no place in the native layout")
    return state


LAYOUTS = {"gpt2": _gpt2, "llama": _llama}


def native_layout(model: nn.Module, kind: str) -> NativeLayout:
    """The `kind` ("gpt2" | "llama") export of `model`; ValueError saying why when it is not exact."""
    reason = _layout_reason(model, kind)
    if reason:
        raise ValueError(reason)
    return LAYOUTS[kind](model)


def best_native_layout(model: nn.Module) -> tuple[str | None, dict[str, str]]:
    """(the native kind that fits exactly or None, {kind: why not} for the others)."""
    reasons = {kind: _layout_reason(model, kind) for kind in LAYOUTS}
    fits = [kind for kind, reason in reasons.items() if not reason]
    return (fits[0] if fits else None), reasons
