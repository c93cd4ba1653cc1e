"""A Hugging Face `PreTrainedModel` around any slmlab architecture (variants and plugins included).

`slmlab export RUN --to hf OUT` copies this file into OUT beside config.json (whose `auto_map`
names the two classes below), so that

    AutoModelForCausalLM.from_pretrained(OUT, trust_remote_code=True)

loads the model and `generate()` samples from it. The architecture itself is slmlab's: the config
holds the run's `model` section (`slmlab_model`) and the source of every plugin it used
(`slmlab_plugins`, each checked against its SHA-256 before it runs), and the loading environment
needs `pip install slmlab` (the version that exported it is recorded as `slmlab_version`).
Architectures that map exactly onto GPT-2 or Llama are exported natively instead (no remote code).

Shapes: input_ids (B, T) -> logits (B, T, V); attention_mask (B, T) may mark padding before
and/or after each row's tokens (remote.masked_logits). Decoding recomputes the (cropped) context
each step: slmlab's own KV cache lives in slmlab's `generate`, not in Hugging Face's cache classes.
"""

from __future__ import annotations

import torch
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


class SlmlabConfig(PretrainedConfig):
    model_type = "slmlab"

    def __init__(self, slmlab_model: dict | None = None, slmlab_plugins: list | None = None, slmlab_version: str = "", **kwargs):
        self.slmlab_model = slmlab_model or {}
        self.slmlab_plugins = slmlab_plugins or []
        self.slmlab_version = slmlab_version
        self.vocab_size = self.slmlab_model.get("vocab_size", 0)
        self.max_position_embeddings = self.slmlab_model.get("block_size", 0)
        kwargs.setdefault("tie_word_embeddings", bool(self.slmlab_model.get("tie_embeddings", True)))
        super().__init__(**kwargs)


class SlmlabForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = SlmlabConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _supports_cache_class = False

    def __init__(self, config: SlmlabConfig):
        super().__init__(config)
        from slmlab.export.remote import build_from_hf_config
        from slmlab.training.distributed import tied_aliases

        self.model = build_from_hf_config(config)
        self._tied_weights_keys = {f"model.{a}": f"model.{b}" for a, b in tied_aliases(self.model).items()}
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """Hugging Face's loading, then the buffers that no checkpoint holds (non-persistent ones: a
        plugin's table of constants, say), as the model's own constructor computes them:
        transformers builds the model on the meta device and leaves those buffers uninitialised."""
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).restore_computed_buffers()  # output_loading_info=True
        return loaded

    def restore_computed_buffers(self) -> None:
        """Set every non-persistent buffer to its value in a freshly built model (built on the CPU,
        leaving torch's global random state as it was)."""
        from slmlab.export.remote import build_from_hf_config

        names = [
            f"{prefix}.{name}" if prefix else name
            for prefix, module in self.model.named_modules()
            for name in module._non_persistent_buffers_set
            if module._buffers.get(name) is not None
        ]
        if not names:
            return
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            fresh = build_from_hf_config(self.config)
        with torch.no_grad():
            for name in names:
                self.model.get_buffer(name).copy_(fresh.get_buffer(name))

    def _init_weights(self, module) -> None:
        """Weights come from the checkpoint; slmlab's own initialisation ran when it was built."""

    def get_input_embeddings(self):
        return getattr(self.model, "wte", None)

    def get_output_embeddings(self):
        return None  # the LM head is slmlab's (it may be tied, or not linear at all)

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, labels=None, **kwargs):
        """input_ids (B, T) -> CausalLMOutputWithPast(logits (B, T, V), loss of labels shifted by one).
        attention_mask (B, T): 0 marks padding, before each row's tokens (left, as `generate()`
        pads) or after them (right); slmlab.export.remote.masked_logits says which models take which."""
        from slmlab.export.remote import masked_logits

        logits = masked_logits(self.model, input_ids, attention_mask)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, attention_mask=None, **kwargs):
        """The whole sequence so far, cropped to the model's context (slmlab's uncached sampling)."""
        block = self.config.max_position_embeddings
        if block and input_ids.shape[1] > block:
            input_ids = input_ids[:, -block:]
            attention_mask = None if attention_mask is None else attention_mask[:, -block:]
        return {"input_ids": input_ids, "attention_mask": attention_mask}
