"""TapeTransformer (seed 001, nano-research-gpt), rebuilt as a causal language model.

    a(x) = 2 atanh(φ(2 tanh(x/2)) / 2),  φ(u) = l / √(1 + 24 l²),  l = sign(u) log(1 + |u|)
                                                   the bounded log-compressing activation
    soft_xor(a, b) = (σ(a) + σ(b))/2 − σ(a)σ(b);  softmax_mix(a, b) = a σ(a−b) + b σ(b−a);  sum = a + b

    tape block     h = LN(r + Attn(c));  h = LN(h + W_2 a(W_1 h))     post-norm, W_1: d -> 8d (causal Attn)
    tape head      left and right stacks of tape blocks; layer i reads its own stack's stream r and the
                   combination c_{i-1} = rule(left_{i-1}, right_{i-1}) as attention input (c_0 = input);
                   the head returns c_n
    coda           a tape head (2 layers, soft-XOR) over x = E[idx] + sinusoidal positions
    prophet        2-layer char-RNN, left to right over x: h_t = soft_xor(a(W_1 x_t + U_1 h_{t-1}),
                   a(W_2 x_t + U_2 h_{t-1})) per layer, projected back to d_model
    critic k       a tape head (4 layers, softmax mix) over g_k ⊙ coda + (1 − g_k) ⊙ prophet + E_k[idx],
                   g_k = σ(G_k [coda; prophet]) (a learned gate) and its own token embedding E_k
    moderator      "merge": W RMSNorm([coda; critic_1; ...; critic_K]);  "last": one critic's output alone
                   (only that critic, its gate and embedding are built: the others would get no gradient)
    unembedding    model.head (Student-t in the presets) on LN(moderator output)

What the notebook's code did and this module does not: its attention had no causal mask; a block
threw away its token embedding and side input once a previous hidden state existed, so the prophet
and the second embedding never received gradient; its merge reinterpreted memory with `view` and
mixed batch items; its XOR multiplied all features together. Here every attention is causal (the
backbone's SDPA attention with its KV cache), the prophet runs strictly left to right and keeps its
hidden state in the cache, and the tests prove causality, cache equivalence, batch independence
and a non-zero gradient for every parameter.

The graph takes no attention extensions, no residual conditioning and no per-layer attention
patterns (`extension_points` is empty: the config checks refuse those settings); model.attention
applies to every tape block. The notebook's sign-agreement optimizer is variants/wolf.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..config import ModelConfig
from ..config.checks import check_model, check_parameters
from ..errors import ConfigError
from ..model import naive
from ..model.attention import CausalSelfAttention, KVCache
from ..model.generation import GenerationMixin
from ..model.heads import StudentTHead, build_head
from ..model.hooks import HookPoint
from ..model.initialization import init_by_name
from ..model.inputs import check_inputs
from ..model.layers import build_norm
from ..model.positions import build_positions, embed_tokens, token_positions
from ..registry import ARCHITECTURES, NAIVE_MODEL_REFERENCES, register_model_check, register_section
from ..tables import counted


@dataclass
class TapeConfig:
    """TapeTransformer (seed 001); the graph is in this module's docstring."""

    n_critics: int = 4  # critic heads (the "merge" moderator reads them all)
    coda_layers: int = 2  # tape blocks in each of the coda's two stacks
    critic_layers: int = 4  # tape blocks in each of a critic's two stacks
    coda_rule: str = "soft_xor"  # how a tape head combines its left and right stacks: soft_xor | softmax_mix | sum
    critic_rule: str = "softmax_mix"  # how a critic combines its stacks (as coda_rule)
    moderator: Literal["merge", "last"] = "merge"  # "merge": RMSNorm + projection of coda and every critic; "last": one critic
    rnn_dim: int = 0  # the prophet char-RNN's width; 0 -> d_model
    rnn_layers: int = 2  # layers of the prophet char-RNN
    mlp_expand: int = 8  # rectified-KAN MLP width = mlp_expand * d_model

    @property
    def built_critics(self) -> int:
        """The critics built: n_critics, or one where the moderator reads only the last."""
        return 1 if self.moderator == "last" else self.n_critics

    @property
    def blocks(self) -> int:
        """The TapeBlocks built: a left and a right stack for the coda and for each built critic."""
        return 2 * (self.coda_layers + self.built_critics * self.critic_layers)


def bounded_log(x: torch.Tensor) -> torch.Tensor:
    """a(x) = 2 atanh(φ(2 tanh(x/2)) / 2); |a(x)| < 0.21 for every x, a'(0) = 1."""
    u = 2 * torch.tanh(x / 2)
    magnitude = u.abs()
    ratio = torch.where(magnitude > 1e-6, torch.log1p(magnitude) / magnitude.clamp_min(1e-6), 1 - magnitude / 2)
    log_u = u * ratio  # sign(u) log(1 + |u|), with the right slope at 0
    phi = log_u / torch.sqrt(1 + 24 * log_u * log_u)
    return 2 * torch.atanh(phi / 2)


def soft_xor(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    sa, sb = torch.sigmoid(a), torch.sigmoid(b)
    return (sa + sb) / 2 - sa * sb


def softmax_mix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise softmax over the pair, weighting each value by its own weight."""
    w = torch.sigmoid(a - b)
    return a * w + b * (1 - w)


RULES = {"soft_xor": soft_xor, "softmax_mix": softmax_mix, "sum": torch.add}


class TapeBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, positions: nn.Module):
        super().__init__()
        self.attn = CausalSelfAttention(cfg, 0, positions)
        self.ln1, self.ln2 = build_norm(cfg), build_norm(cfg)
        width = cfg.tape.mlp_expand * cfg.d_model
        self.fc, self.proj = nn.Linear(cfg.d_model, width, bias=cfg.bias), nn.Linear(width, cfg.d_model, bias=cfg.bias)

    def forward(self, stream: torch.Tensor, attend: torch.Tensor, positions: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        h = self.ln1(stream + self.attn(attend, positions, cache))
        return self.ln2(h + self.proj(bounded_log(self.fc(h))))


class TapeHead(nn.Module):
    def __init__(self, cfg: ModelConfig, layers: int, rule: str, positions: nn.Module):
        super().__init__()
        self.left = nn.ModuleList(TapeBlock(cfg, positions) for _ in range(layers))
        self.right = nn.ModuleList(TapeBlock(cfg, positions) for _ in range(layers))
        self.rule = RULES[rule]

    def forward(self, x: torch.Tensor, positions: torch.Tensor, caches: list[KVCache] | None) -> torch.Tensor:
        left = right = combined = x
        for i, (block_l, block_r) in enumerate(zip(self.left, self.right)):
            left, right = (
                block_l(left, combined, positions, caches[2 * i] if caches else None),
                block_r(right, combined, positions, caches[2 * i + 1] if caches else None),
            )
            combined = self.rule(left, right)
        return combined

    def make_caches(self, max_len: int) -> list[KVCache]:
        return [block.attn.make_cache(max_len) for pair in zip(self.left, self.right) for block in pair]


class Prophet(nn.Module):
    """The char-RNN: (B, T, d_model) -> (B, T, d_model), strictly left to right. The input
    projections of all steps are one matmul; only U h_{t-1} runs per step. Under torch.compile a
    sequence (T > 1: training, a prompt) runs its steps eagerly between the graphs: traced, its T
    steps were unrolled into the graph (142 s of compiling at T = 37 on a 1-layer test model, and
    growing with T); a decoding step (T = 1) is traced with the rest."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.width = width = cfg.tape.rnn_dim or cfg.d_model
        self.inputs = nn.ModuleList(
            nn.Linear(cfg.d_model if i == 0 else width, 2 * width, bias=cfg.bias) for i in range(cfg.tape.rnn_layers)
        )
        self.recurrent = nn.ModuleList(nn.Linear(width, 2 * width, bias=False) for _ in range(cfg.tape.rnn_layers))
        self.out = nn.Linear(width, cfg.d_model, bias=cfg.bias)

    def forward(
        self, x: torch.Tensor, state: list[torch.Tensor] | None = None, real: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`state`: each layer's last hidden state (B, width) from the cache; `real` (B, T) bool:
        which positions hold a real token (a left-padded batch), the others leaving the state as
        it was, so a row's recurrence starts at its first real token as it would alone."""
        B, T, _ = x.shape
        compiling_a_sequence = T > 1 and torch.compiler.is_compiling()  # (see the class docstring)
        recur = torch.compiler.disable(_recurrence) if compiling_a_sequence else _recurrence
        final = []
        for layer, (inp, rec) in enumerate(zip(self.inputs, self.recurrent)):
            h = state[layer] if state is not None else x.new_zeros(B, self.width)
            x, h = recur(inp(x), h, rec, real)
            final.append(h)
        return self.out(x), final


def _recurrence(
    pre: torch.Tensor, h: torch.Tensor, rec: nn.Linear, real: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's steps: pre (B, T, 2 width) = W x_t for every t, h (B, width) the state before
    them -> (every h_t (B, T, width), the last h_t). A position that is not `real` keeps h."""
    width, outputs = h.shape[1], []
    for t in range(pre.shape[1]):
        a = bounded_log(pre[:, t] + rec(h))  # both halves in one call: 30% fewer ops per step
        step = soft_xor(a[:, :width], a[:, width:])
        h = step if real is None else torch.where(real[:, t, None], step, h)
        outputs.append(h)
    return torch.stack(outputs, dim=1), h


class TapeCache(list):
    """KV caches of every tape block (coda first, then each critic) plus the prophet's hidden state."""

    def __init__(self, caches: list[KVCache]):
        super().__init__(caches)
        self.rnn_state: list[torch.Tensor] | None = None


class TapeTransformer(GenerationMixin, nn.Module):
    """model.arch = "tape"; implements model.protocol.LanguageModel."""

    extension_points = frozenset()

    def __init__(self, cfg: ModelConfig, attention_extensions: Callable | None = None, conditioning: nn.Module | None = None):
        """The config checks refuse extensions and conditioning for this architecture: none is handed in."""
        super().__init__()
        check_model(cfg, building=True)
        if conditioning is not None or (attention_extensions and attention_extensions(0)):
            raise ConfigError("model.arch = 'tape' takes no attention extensions or residual conditioning")
        tape, critics, self.cfg = cfg.tape, cfg.tape.built_critics, cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.positions = build_positions(cfg)
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.coda = TapeHead(cfg, tape.coda_layers, tape.coda_rule, self.positions)
        self.prophet = Prophet(cfg)
        self.gates = nn.ModuleList(nn.Linear(2 * cfg.d_model, cfg.d_model, bias=cfg.bias) for _ in range(critics))
        self.critic_embeddings = nn.ModuleList(nn.Embedding(cfg.vocab_size, cfg.d_model) for _ in range(critics))
        self.critics = nn.ModuleList(TapeHead(cfg, tape.critic_layers, tape.critic_rule, self.positions) for _ in range(critics))
        if tape.moderator == "merge":
            self.merge_norm = nn.RMSNorm((tape.n_critics + 1) * cfg.d_model, eps=cfg.norm_eps)
            self.merge = nn.Linear((tape.n_critics + 1) * cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.norm_f = build_norm(cfg)
        self.head = build_head(cfg)
        if cfg.tie_embeddings:
            self.head.weight = self.wte.weight
        init_by_name(self, self._init_weights, skip=set())

    @classmethod
    def repeated_blocks(cls, cfg: ModelConfig) -> list[tuple[int, Callable[[], nn.Module], str]]:
        """As Decoder's: the coda's and critics' TapeBlocks (a TapeHead has two stacks); the prophet's recurrent layers."""
        t, w = cfg.tape, cfg.tape.rnn_dim or cfg.d_model
        counts = f"model.tape.coda_layers = {t.coda_layers}, n_critics = {t.n_critics}, critic_layers = {t.critic_layers}"
        blocks = t.blocks, lambda: TapeBlock(cfg, build_positions(cfg)), counts
        return [blocks, (t.rnn_layers, lambda: nn.Linear(w, 2 * w, bias=False), f"model.tape.rnn_layers = {t.rnn_layers}")]

    def _init_weights(self, module: nn.Module, generator: torch.Generator) -> None:
        """N(0, init_std) weights, zero biases; each module drawn with its own name's generator
        (model/initialization.py: shared across variants)."""
        if isinstance(module, (nn.Linear, nn.Embedding, StudentTHead)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std, generator=generator)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, caches: TapeCache | None = None, logits_to_keep: int = 0
    ):
        """idx (B, T) -> (logits (B, T, V), None), or with targets (None, mean cross-entropy);
        `logits_to_keep` = k > 0: the last k positions' logits only (Decoder.forward)."""
        start = caches[0].length if caches else 0
        check_inputs(idx, targets, vocab_size=self.cfg.vocab_size, start=start, max_positions=self.cfg.block_size)
        B, T = idx.shape
        padding = getattr(caches[0], "padding", None) if caches else None
        positions, real = token_positions(start, T, padding, idx.device)  # real: (B, T), the prophet skips the rest
        x = embed_tokens(self, idx, positions)
        n_coda = 2 * self.cfg.tape.coda_layers
        coda = self.coda(x, positions, caches[:n_coda] if caches else None)
        prophet, rnn_state = self.prophet(x, caches.rnn_state if caches else None, real)
        if caches is not None:
            caches.rnn_state = rnn_state
        opinions, per_critic = [], 2 * self.cfg.tape.critic_layers
        for k, (gate, embedding, critic) in enumerate(zip(self.gates, self.critic_embeddings, self.critics)):
            g = torch.sigmoid(gate(torch.cat([coda, prophet], dim=-1)))
            stream = g * coda + (1 - g) * prophet + embedding(idx)
            first = n_coda + k * per_critic
            opinions.append(critic(stream, positions, caches[first : first + per_critic] if caches else None))
        if self.cfg.tape.moderator == "merge":
            h = self.merge(self.merge_norm(torch.cat([coda, *opinions], dim=-1)))
        else:
            h = opinions[-1]
        h = self.norm_f(h)
        if targets is None:
            return self.head(h[:, -logits_to_keep:] if logits_to_keep else h), None
        return None, self.head.loss(h.reshape(B * T, -1), targets.reshape(-1))

    def make_caches(self, max_len: int | None = None) -> TapeCache:
        size = max_len or self.cfg.block_size
        return TapeCache([*self.coda.make_caches(size), *(c for critic in self.critics for c in critic.make_caches(size))])

    def decodes_padded(self) -> bool:
        """A left-padded batch decodes exactly where the positions take per-row (B, T) positions and
        every tape block's attention masks the padding (the prophet skips it itself)."""
        return getattr(self.positions, "padding_safe", False) and all(block.attn.decodes_padded() for block in self.tape_blocks())

    def tape_blocks(self) -> list[TapeBlock]:
        """Every tape block, the coda's and the critics'."""
        return [m for m in self.modules() if isinstance(m, TapeBlock)]

    def shard_units(self) -> list[nn.Module]:
        """Every tape block: FSDP2 shards each on its own."""
        return self.tape_blocks()

    def describe(self) -> str:
        m, t = self.cfg, self.cfg.tape
        critics = f"{t.n_critics} critics" if t.moderator == "merge" else "1 critic (moderator last)"
        return (
            f"tape: coda {t.coda_layers} + {critics} x {counted(t.critic_layers, 'layers')} (left/right stacks), "
            f"d_model {m.d_model}, {counted(m.n_head, 'heads')}, MLP x{t.mlp_expand}, prophet RNN {t.rnn_dim or m.d_model} x {t.rnn_layers}, "
            f"moderator {t.moderator}, block {m.block_size}, vocab {m.vocab_size}, "
            f"{'tied' if m.tie_embeddings else 'untied'} {m.head} head"
        )


ARCHITECTURES.register("tape", TapeTransformer)


# ---- slmlab check's naive reference: the graph of this module's docstring, written out ------------

NAIVE_RULES = {
    "soft_xor": lambda a, b: (torch.sigmoid(a) + torch.sigmoid(b)) / 2 - torch.sigmoid(a) * torch.sigmoid(b),
    "softmax_mix": lambda a, b: a * torch.sigmoid(a - b) + b * torch.sigmoid(b - a),
    "sum": lambda a, b: a + b,
}


def naive_bounded_log(x: torch.Tensor) -> torch.Tensor:
    u = 2 * torch.tanh(x / 2)
    log_u = torch.sign(u) * torch.log1p(u.abs())
    return 2 * torch.atanh(log_u / torch.sqrt(1 + 24 * log_u**2) / 2)


def naive_tape_head(head: TapeHead, rule: str, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | None:
    """Left and right stacks, each layer attending to the previous layer's combination."""
    left = right = combined = x
    for pair in zip(head.left, head.right):
        streams = []
        for block, stream in zip(pair, (left, right)):
            attended = naive.attention(block.attn, combined, positions)
            if attended is None or (h := naive.norm(block.ln1, stream + attended)) is None:
                return None  # a plugin's norm without a naive form: the reference does not apply
            streams.append(naive.norm(block.ln2, h + naive.linear(block.proj, naive_bounded_log(naive.linear(block.fc, h)))))
        left, right = streams
        combined = NAIVE_RULES[rule](left, right)
    return combined


def naive_prophet(prophet: Prophet, x: torch.Tensor) -> torch.Tensor:
    """h_t = soft_xor(a(W_1 x_t + U_1 h_{t-1}), a(W_2 x_t + U_2 h_{t-1})) per layer, h_0 = 0."""
    w = prophet.width
    for inputs, recurrent in zip(prophet.inputs, prophet.recurrent):
        h, outputs = x.new_zeros(x.shape[0], w), []
        for t in range(x.shape[1]):
            z = naive.linear(inputs, x[:, t]) + h @ recurrent.weight.T
            h = NAIVE_RULES["soft_xor"](naive_bounded_log(z[:, :w]), naive_bounded_log(z[:, w:]))
            outputs.append(h)
        x = torch.stack(outputs, dim=1)
    return naive.linear(prophet.out, x)


def naive_tape(model, idx: torch.Tensor) -> torch.Tensor | None:
    """The TapeTransformer's logits for idx (B, T) from the graph in this module's docstring
    (None for another model, or where a piece has no naive form)."""
    if type(model) is not TapeTransformer:
        return None
    tape, positions = model.cfg.tape, torch.arange(idx.shape[1], device=idx.device)
    if (x := naive.embed(model, idx)) is None:
        return None
    if (coda := naive_tape_head(model.coda, tape.coda_rule, x, positions)) is None:
        return None
    prophet = naive_prophet(model.prophet, x)
    opinions = []
    for gate, embedding, critic in zip(model.gates, model.critic_embeddings, model.critics):
        g = torch.sigmoid(naive.linear(gate, torch.cat([coda, prophet], dim=-1)))
        opinions.append(
            naive_tape_head(critic, tape.critic_rule, g * coda + (1 - g) * prophet + embedding.weight[idx], positions)
        )
    if any(o is None for o in opinions):
        return None
    merged = torch.cat([coda, *opinions], dim=-1)
    h = naive.linear(model.merge, naive.norm(model.merge_norm, merged)) if tape.moderator == "merge" else opinions[-1]
    h = naive.norm(model.norm_f, h)
    return None if h is None else naive.head(model.head, h)


NAIVE_MODEL_REFERENCES.register("tape", naive_tape)
register_section(
    "tape",
    TapeConfig,
    arch="tape",
    tiny={"n_critics": 2, "coda_layers": 1, "critic_layers": 1, "rnn_layers": 1, "mlp_expand": 2},  # every path, few layers
)


@register_model_check
def check_tape(m: ModelConfig) -> None:
    t = m.tape
    if m.arch == "tape" and m.mlp != "gelu":
        raise ConfigError(
            f"model.mlp = {m.mlp!r} has no effect under model.arch = 'tape' (its MLP is the rectified KAN, "
            "sized by model.tape.mlp_expand); leave model.mlp = 'gelu'"
        )
    for key in ("n_critics", "coda_layers", "critic_layers", "rnn_layers", "mlp_expand"):
        if getattr(t, key) <= 0:
            raise ConfigError(f"model.tape.{key} must be > 0, got {getattr(t, key)}")
    if t.rnn_dim < 0:
        raise ConfigError(f"model.tape.rnn_dim must be >= 0, got {t.rnn_dim}")
    for key in ("coda_rule", "critic_rule"):
        if getattr(t, key) not in RULES:
            raise ConfigError(f"model.tape.{key} = {getattr(t, key)!r} is not one of {', '.join(RULES)}")
    if m.arch == "tape":  # tape blocks (attention 4 d², MLP 2 d · expand d), critic embeddings, prophet, merge
        critics, width, d = t.built_critics, t.rnn_dim or m.d_model, m.d_model
        check_parameters(
            t.blocks * (4 + 2 * t.mlp_expand) * d * d + critics * m.vocab_size * d + t.rnn_layers * 4 * width * max(width, d)
            + (t.n_critics + 1) * d * d,
            f"model.tape.n_critics = {t.n_critics}, coda_layers = {t.coda_layers}, critic_layers = {t.critic_layers}, "
            f"mlp_expand = {t.mlp_expand}, rnn_dim = {width}, rnn_layers = {t.rnn_layers}",
        )  # fmt: skip
