"""Which setting a key slmlab does not know meant: a setting of that name in another section
(`n_layer` at a config's top level is model.n_layer), or another tool's name for one (nanoGPT's
flags, Hugging Face's configs and TrainingArguments, litgpt's configs: `n_embd` is model.d_model).
Only the error's hint reads these names: a config spells each setting one way."""

from __future__ import annotations

import difflib
from collections.abc import Collection

from ..registry import closest

# another tool's name -> (slmlab's setting, how its value reads otherwise where it does)
OTHER_TOOLS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("n_embd", "hidden_size", "dim", "n_embed"), ("model.d_model", "")),
    **dict.fromkeys(("num_hidden_layers", "num_layers", "n_layers"), ("model.n_layer", "")),
    **dict.fromkeys(("num_attention_heads", "n_heads", "num_heads"), ("model.n_head", "")),
    **dict.fromkeys(("intermediate_size", "n_inner", "ffn_dim"), ("model.d_ff", "")),
    **dict.fromkeys(("max_position_embeddings", "n_positions", "n_ctx", "context_length"), ("model.block_size", "")),
    **dict.fromkeys(("padded_vocab_size",), ("model.vocab_size", "")),
    **dict.fromkeys(("tie_word_embeddings",), ("model.tie_embeddings", "")),
    **dict.fromkeys(("rms_norm_eps", "layer_norm_epsilon", "layer_norm_eps"), ("model.norm_eps", "")),
    **dict.fromkeys(("rope_base",), ("model.rope_theta", "")),
    **dict.fromkeys(("rotary_percentage", "partial_rotary_factor"), ("model.rope_fraction", "")),
    **dict.fromkeys(("rope_scaling",), ("model.rope_scale", "a number, the linear factor")),
    **dict.fromkeys(("initializer_range",), ("model.init_std", "")),
    **dict.fromkeys(("hidden_act", "activation_function"), ("model.mlp", "the MLP's kind: gelu, swiglu, ...")),
    **dict.fromkeys(("max_iters", "max_steps"), ("train.steps", "")),
    **dict.fromkeys(("lr_decay_iters",), ("train.steps", "the learning rate decays over the run's steps")),
    **dict.fromkeys(("learning_rate",), ("train.lr", "")),
    **dict.fromkeys(("min_lr",), ("train.min_lr_ratio", "a fraction of train.lr, not a rate")),
    **dict.fromkeys(("warmup_iters", "lr_warmup_steps"), ("train.warmup_steps", "")),
    **dict.fromkeys(("lr_scheduler_type",), ("train.schedule", "")),
    **dict.fromkeys(("decay_lr",), ("train.min_lr_ratio", "1 keeps the rate constant after warm-up")),
    **dict.fromkeys(("gradient_accumulation_steps",), ("train.grad_accum", "")),
    **dict.fromkeys(("micro_batch_size", "per_device_train_batch_size"), ("train.batch_size", "")),
    **dict.fromkeys(("max_norm", "max_grad_norm", "gradient_clip_val"), ("train.grad_clip", "")),
    **dict.fromkeys(("adam_beta1",), ("train.beta1", "")),
    **dict.fromkeys(("adam_beta2",), ("train.beta2", "")),
    **dict.fromkeys(("eval_interval", "eval_steps"), ("train.eval_every", "")),
    **dict.fromkeys(("eval_iters",), ("train.eval_batches", "")),
    **dict.fromkeys(("log_interval", "logging_steps"), ("train.log_every", "")),
    **dict.fromkeys(("save_interval", "save_steps"), ("train.checkpoint_every", "")),
    **dict.fromkeys(("torch_compile",), ("train.compile", "")),
    **dict.fromkeys(("bf16", "fp16", "mixed_precision"), ("train.dtype", '"bf16" or "fp32"')),
    **dict.fromkeys(("num_train_epochs", "epochs"), ("train.steps", "optimizer steps, not passes over the data")),
    **dict.fromkeys(("wandb_log", "report_to"), ("train.trackers", 'a list: ["wandb"]')),
    **dict.fromkeys(("wandb_project",), ("train.tracker_project", "")),
    **dict.fromkeys(("wandb_run_name", "run_name"), ("name", "")),
    **dict.fromkeys(("output_dir",), ("out_dir", "")),
    **dict.fromkeys(("dataset",), ("data.source", "")),
    **dict.fromkeys(("max_seq_length", "seq_length"), ("data.seq_len", "")),
}


def meant_setting(name: str, local: Collection[str], prefix: str) -> tuple[str, str] | None:
    """(the full key, a note or '') of the run config's setting that `name`, unknown among
    `local` (the settings of the table `prefix` names, '' the top level), stands for: the one
    setting of that name in another section (from a variant's section, not in another variant's:
    model.smat.enabled is not model.self_area.enabled), else another tool's name for one (spelled
    in `prefix` where it holds that setting: a sweep's [tune] learning_rate is tune.lr); None if
    neither."""
    from .schema import RunConfig  # (schema imports values, which imports this module)

    in_section = "." in prefix  # a variant's section (model.smat): another's switch of that name is not the one meant
    elsewhere = [
        key for key in RunConfig().settings() if key.rpartition(".")[2] == name and not (in_section and key.count(".") > 1)
    ]
    if len(elsewhere) == 1:
        return elsewhere[0], ""
    if name not in OTHER_TOOLS:
        return None
    key, note = OTHER_TOOLS[name]
    leaf = key.rpartition(".")[2]
    return (f"{prefix}.{leaf}" if prefix else leaf, note) if leaf in local else (key, note)


def setting_hint(name: str, local: Collection[str], prefix: str) -> str:
    """' (did you mean 'model.d_model'?)' for the unknown key `name` under `prefix`: a key of
    `local` spelled nearly so (a sweep's `seed` is its seeds, not train.seed), else meant_setting's
    setting with its note, else the closest spelling among `local`, else ''."""
    meant = None if difflib.get_close_matches(name, local, n=1, cutoff=0.8) else meant_setting(name, local, prefix)
    if meant is None:
        return closest(name, local, prefix)
    key, note = meant
    return f" (did you mean '{key}'?{' ' + note if note else ''})"
