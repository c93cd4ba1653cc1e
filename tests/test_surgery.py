"""Model surgery on tiny randomly initialised Hugging Face models (GPT-2, Llama, Phi-3): outputs
unchanged at insertion, only the Self Area trains, save/load round trip, generation through
`model.generate` (cached and uncached agree), and the `slmlab surgery` verb end to end."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from slmlab.cli import main
from slmlab.data.tokens import TokenSplit
from slmlab.persona.surgery import decoder_layers, insert_self_area, load_self_area, save_self_area
from slmlab.persona.surgery_training import train_self_area
from slmlab.runs.checkpoints import CheckpointError
from slmlab.variants.self_area import SelfAreaConfig

SHAPE = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 64,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=1, eos_token_id=2
    ),
    "llama": lambda: transformers.LlamaConfig(**SHAPE, num_key_value_heads=1),
    "phi3": lambda: transformers.Phi3Config(**SHAPE, num_key_value_heads=2),
}


def tiny(kind: str):
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(CONFIGS[kind]()).eval()


def random_tokens(n: int = 4000) -> TokenSplit:
    ids = np.random.default_rng(0).integers(3, 64, n)
    ids[::7] = 5  # some structure to learn
    return TokenSplit(ids, {"*": (0, n)})


@pytest.fixture(params=list(CONFIGS))
def kind(request):
    return request.param


@pytest.mark.parametrize("token_dependent", [False, True])
def test_outputs_are_unchanged_at_insertion(kind, token_dependent):
    model = tiny(kind)
    idx = torch.randint(0, 64, (2, 16))
    before = model(input_ids=idx).logits
    area = insert_self_area(model, SelfAreaConfig(enabled=True, self_dim=8, token_dependent=token_dependent))
    assert torch.equal(model(input_ids=idx).logits, before)
    with torch.no_grad():
        area.alpha.fill_(0.5)
    assert not torch.allclose(model(input_ids=idx).logits, before)


def test_only_the_self_area_trains_and_round_trips(kind, tmp_path):
    model = tiny(kind)
    pristine = copy.deepcopy(model)
    base = {name: p.clone() for name, p in model.named_parameters()}
    area = insert_self_area(model, SelfAreaConfig(enabled=True, self_dim=8))
    initial = {name: p.clone() for name, p in area.named_parameters()}
    train_self_area(model, area, random_tokens(), steps=5, lr=1e-2, batch=2, seq_len=16)
    for name, param in model.named_parameters():
        if name.startswith("self_area."):
            assert not torch.equal(param, initial[name.removeprefix("self_area.")]), name
        else:
            assert torch.equal(param, base[name]) and param.grad is None and not param.requires_grad, name
    save_self_area(area, tmp_path / "area", kind)
    loaded = load_self_area(pristine, tmp_path / "area")
    idx = torch.randint(0, 64, (2, 16))
    torch.testing.assert_close(pristine(input_ids=idx).logits, model(input_ids=idx).logits, rtol=0, atol=0)
    assert loaded.alpha.abs().sum() > 0


def test_generation_goes_through_the_self_area_with_and_without_cache(kind):
    model = tiny(kind)
    prompt = torch.randint(3, 64, (1, 6))
    plain = model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
    area = insert_self_area(model, SelfAreaConfig(enabled=True, self_dim=8))
    with torch.no_grad():
        area.alpha.fill_(3.0)
    cached = model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
    uncached = model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0, use_cache=False)
    assert cached.shape == (1, 14) and torch.equal(cached, uncached)
    assert not torch.equal(cached, plain)


def test_a_self_area_does_not_load_onto_another_base(tmp_path):
    area = insert_self_area(tiny("gpt2"), SelfAreaConfig(enabled=True, self_dim=8))
    save_self_area(area, tmp_path / "area", "gpt2")
    wider = transformers.AutoModelForCausalLM.from_config(transformers.GPT2Config(vocab_size=64, n_embd=48, n_layer=2, n_head=2))
    with pytest.raises(CheckpointError, match="hidden size 32"):
        load_self_area(wider, tmp_path / "area")


def test_surgery_verb_end_to_end(tmp_path, text_corpus, capsys, caplog, monkeypatch):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    import slmlab.phase_progress

    monkeypatch.setattr(slmlab.phase_progress, "PHASE_HEARTBEAT", 0.0)  # a progress line at every update
    caplog.set_level("INFO", logger="slmlab")

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    texts = [p.read_text() for p in sorted(text_corpus.rglob("*.txt"))]
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<eos>"]))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", eos_token="<eos>")
    base = tmp_path / "base"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.GPT2Config(
            vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2, eos_token_id=tokenizer.eos_token_id
        )
    )
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    out = tmp_path / "area"
    assert (
        main(
            [
                "surgery",
                "--hf-model",
                str(base),
                "--persona-data",
                str(text_corpus / "verse"),
                "--steps",
                "30",
                "--seq-len",
                "32",
                "--self-dim",
                "8",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["persona_val_loss_after"] < summary["persona_val_loss_before"]
    change = summary["persona_ppl_change"]  # the paired change, with its interval over the batches
    assert change["delta_pct"] == pytest.approx(
        100 * math.expm1(summary["persona_val_loss_after"] - summary["persona_val_loss_before"])
    )
    assert change["delta_pct_low"] < change["delta_pct"] < change["delta_pct_high"] < 0
    printed = f"{change['delta_pct']:+.2f}%, 95% CI [{change['delta_pct_low']:+.2f}, {change['delta_pct_high']:+.2f}] over"
    assert printed in capsys.readouterr().out
    assert summary["self_area_params"] < summary["base_params"]
    assert (out / "self_area.safetensors").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert "training the Self Area: 30/30 steps (100%)" in caplog.text and "scoring the persona text: " in caplog.text
    capsys.readouterr()
    assert main(["surgery", "--hf-model", str(base), "--load", str(out), "--generate", "ROMEO", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO")
    # windows longer than the base model's 64 positions ended in an IndexError inside transformers
    argv = ["surgery", "--hf-model", str(base), "--persona-data", str(text_corpus / "verse"), "--out", str(tmp_path / "b")]
    assert main([*argv, "--seq-len", "128"]) == 2
    assert "--seq-len 128 exceeds the 64-token context" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["surgery", "--hf-model", str(tmp_path / "empty"), "--persona-data", str(text_corpus)]) == 2
    assert "has no config.json" in capsys.readouterr().err
    slmlab_run = tmp_path / "slmlab_run"  # a run of this lab: transformers failed with KeyError 'added_tokens'
    slmlab_run.mkdir()
    (slmlab_run / "config.json").write_text(json.dumps({"name": "r", "model": {}, "data": {}, "train": {}}))
    (slmlab_run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    assert main(["surgery", "--hf-model", str(slmlab_run), "--persona-data", str(text_corpus)]) == 2
    assert "is a slmlab run, not a transformers model: export it first" in capsys.readouterr().err
    # --out a slmlab run (or any folder of other files): its metrics.jsonl was deleted, its summary.json replaced
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl", "summary.json"):
        (run / name).write_text("precious")
    for target, says in ((run, "holds files that are not a Self Area"), (out, "already holds a Self Area")):
        command = ["surgery", "--hf-model", str(base), "--persona-data", str(text_corpus / "verse"), "--seq-len", "32"]
        assert main([*command, "--steps", "2", "--out", str(target), "--device", "cpu"]) == 2
        assert says in capsys.readouterr().err
    assert all((run / name).read_text() == "precious" for name in ("config.json", "metrics.jsonl", "summary.json"))
    # both are found before the base model loads: with no model there, they are still what is named
    command = ["surgery", "--hf-model", str(tmp_path / "empty"), "--persona-data", str(text_corpus / "verse")]
    assert main([*command, "--out", str(out)]) == 2
    assert "already holds a Self Area" in capsys.readouterr().err
    assert main(["surgery", "--hf-model", str(tmp_path / "empty"), "--persona-data", str(tmp_path / "no_such.txt")]) == 2
    assert "--persona-data: 'no_such.txt' is neither" in capsys.readouterr().err.replace(str(tmp_path) + "/", "")


def char_tokenizer():
    """A Hugging Face tokenizer over 61 characters + <pad> <bos> <eos> (ids 0-2): the tiny models' 64 ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;!?'\n"
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>")


def test_batched_left_padded_continuations_equal_one_at_a_time(kind):
    from slmlab.persona.surgery import hf_continuations

    model, tokenizer = tiny(kind), char_tokenizer()
    area = insert_self_area(model, SelfAreaConfig(enabled=True, self_dim=8, token_dependent=True))
    with torch.no_grad():
        area.alpha.fill_(1.0)
    prompts = ["To be, or not", "O", "ROMEO: But soft, what light", "Tomorrow, and tomorrow"]
    batched = hf_continuations(model, tokenizer, prompts, 10, sample=False, batch_size=3)
    alone = [hf_continuations(model, tokenizer, [p], 10, sample=False)[0] for p in prompts]
    assert batched == alone and all(len(text) == 10 for text in batched)
    assert tokenizer.padding_side == "right"  # restored
    sampled = hf_continuations(model, tokenizer, prompts, 10, seed=3)
    assert sampled == hf_continuations(model, tokenizer, prompts, 10, seed=3) and sampled != batched


def test_continuations_without_a_pad_token_and_beyond_the_context(kind):
    """A tokenizer with neither pad nor end-of-text token (slmlab's exported char tokenizer) was
    refused even for one prompt; a continuation past the context died inside transformers."""
    from slmlab.config import ConfigError
    from slmlab.persona.surgery import hf_continuations

    model, padded = tiny(kind), char_tokenizer()
    bare = char_tokenizer()
    bare.pad_token, bare.eos_token = None, None
    prompts = ["To be, or not", "O"]
    assert hf_continuations(model, bare, prompts, 10, sample=False) == hf_continuations(model, padded, prompts, 10, sample=False)
    with pytest.raises(ConfigError, match="exceed the model's 64-token context; give at most 51 new tokens"):
        hf_continuations(model, padded, prompts, 60, sample=False)


def test_layers_off_the_usual_paths_are_found_by_the_configs_layer_count():
    """MPT keeps its layers at transformer.blocks; a mixture keeps longer lists inside its layers."""
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.MptConfig(d_model=32, n_heads=2, n_layers=2, vocab_size=64, max_seq_len=64)
    ).eval()
    idx = torch.randint(0, 64, (2, 16))
    before = model(input_ids=idx).logits
    area = insert_self_area(model, SelfAreaConfig(enabled=True, self_dim=8))
    assert area.slots == 2 and torch.equal(model(input_ids=idx).logits, before)
    with torch.no_grad():
        area.alpha.fill_(0.5)
    assert not torch.allclose(model(input_ids=idx).logits, before)

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.experts = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(8))

    class Mixture(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = transformers.PretrainedConfig(num_hidden_layers=3)
            self.trunk = torch.nn.Module()
            self.trunk.blocks = torch.nn.ModuleList(Layer() for _ in range(3))

    mixture = Mixture()
    assert decoder_layers(mixture) is mixture.trunk.blocks


def test_text_the_models_tokenizer_cannot_encode_is_one_line_naming_it(kind, tmp_path):
    """A character vocabulary without an unknown token (as slmlab exports a char run's) raised the
    tokenizers library's bare Exception from inside surgery: a traceback."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    from slmlab.config import ConfigError, DataConfig
    from slmlab.persona.surgery import hf_continuations
    from slmlab.persona.surgery_training import persona_tokens

    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;!?'\n"
    backend = Tokenizer(models.WordLevel({"<eos>": 0, **{c: i + 1 for i, c in enumerate(chars)}}))  # no unk_token
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", model_max_length=64)
    with pytest.raises(ConfigError, match=r"^the prompt: the model's tokenizer cannot encode it \(WordLevel error"):
        hf_continuations(tiny(kind), tokenizer, ["Hello 😀"], 5, sample=False)
    (tmp_path / "persona").mkdir()
    (tmp_path / "persona" / "long.txt").write_text("To be, or not to be. " * 40)
    (tmp_path / "persona" / "odd.txt").write_text("Price: 5 €")
    with pytest.raises(ConfigError, match="^persona document '.*odd.txt': the model's tokenizer cannot encode it"):
        persona_tokens(DataConfig(source=str(tmp_path / "persona")), tokenizer)
    (tmp_path / "persona" / "odd.txt").unlink()
    train, val = persona_tokens(DataConfig(source=str(tmp_path / "persona")), tokenizer)
    assert len(train) + len(val) == 21 * 40 + 1  # a document longer than the context, in one piece
