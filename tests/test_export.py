"""`slmlab export RUN --to hf OUT`: every architecture loads in transformers with slmlab's logits
(fp32, within 1e-5) and `generate()` continues a prompt as slmlab's greedy decoding does; native
GPT-2 / Llama where the mapping is exact (no remote code), remote code otherwise; the tokenizer
goes along as a Hugging Face fast tokenizer, id for id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, AutoTokenizer

from slmlab.cli import main
from slmlab.config import ConfigError, config_from_dict
from slmlab.export.hf import export_hf
from slmlab.export.remote import masked_logits
from slmlab.export.tokenizer import to_hf_tokenizer
from slmlab.model import build_model
from slmlab.runs.run_dir import load_run
from slmlab.training import train
from tests.conftest import tiny_config

ROOT = Path(__file__).parents[1]
GATED = str(ROOT / "examples" / "plugins" / "gated_attention.py")
MODERN = {"pos": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False}

# name -> (model fields, data fields, plugins, expected layout)
ARCHITECTURES = {
    "baseline": ({}, {}, [], "gpt2"),
    "baseline_untied_bytes": ({"tie_embeddings": False}, {"tokenizer": "byte"}, [], "gpt2"),
    "modern": (MODERN, {}, [], "llama"),
    "modern_scaled_biased_untied": (
        {**MODERN, "bias": True, "rope_scale": 2.0, "rope_theta": 500.0, "tie_embeddings": False},
        {},
        [],
        "llama",
    ),
    "partial_rope": ({**MODERN, "rope_fraction": 0.5}, {}, [], "remote"),
    "rope_layernorm_gelu": ({"pos": "rope"}, {}, [], "remote"),
    "sinusoidal": ({"pos": "sinusoidal"}, {}, [], "remote"),
    "smat_full": ({"smat": {"use_S": True, "use_G": True}}, {}, [], "remote"),
    "smat_s_only_rope": ({"pos": "rope", "smat": {"use_S": True}}, {}, [], "remote"),
    "self_area": ({"self_area": {"enabled": True, "self_dim": 16}}, {}, [], "remote"),
    "block_local": ({"pos": "rope", "attention": "block_local", "local_block": 8, "global_every": 2}, {}, [], "remote"),
    "student_t": ({"head": "student_t"}, {}, [], "remote"),
    "tape": ({"arch": "tape", "tape": {"n_critics": 2, "coda_layers": 1, "critic_layers": 1}}, {}, [], "remote"),
    "gated_plugin": ({"gated_attention": {"enabled": True}}, {}, [GATED], "remote"),
}


def trained_run(tmp_path, corpus, name, model=None, data=None, plugins=(), steps=3):
    base = tiny_config(corpus, tmp_path).to_dict()
    base.update(name=name, plugins=list(plugins))
    base["model"] = {**base["model"], **(model or {})}
    base["data"] = {**base["data"], **(data or {})}
    base["train"] = {**base["train"], "steps": steps, "eval_every": steps, "checkpoint_every": 0}
    return train(config_from_dict(base)).run_dir


def greedy(model, ids: torch.Tensor, n: int) -> torch.Tensor:
    return model.generate(ids, n, temperature=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_exports_with_equal_logits_and_generation(tmp_path, text_corpus, name):
    model_fields, data_fields, plugins, layout = ARCHITECTURES[name]
    run = trained_run(tmp_path, text_corpus, name, model_fields, data_fields, plugins)
    result = export_hf(run, tmp_path / "hf")
    assert result.layout == layout and result.max_abs_diff < 1e-5
    files = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert ("modeling_slmlab.py" in files) == (layout == "remote")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert ("auto_map" in config) == (layout == "remote")

    cfg, ours, tokenizer = load_run(run)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=layout == "remote", dtype=torch.float32).eval()
    if layout != "remote":
        assert type(hf).__name__ == {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[layout]
    ids = torch.randint(0, cfg.model.vocab_size, (3, cfg.model.block_size), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours(ids)[0] - hf(input_ids=ids).logits).abs().max() < 1e-5

    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    prompt = "ROMEO:\nBut soft, what light"
    assert hf_tokenizer(prompt)["input_ids"] == tokenizer.encode(prompt)
    prompt_ids = torch.tensor([tokenizer.encode(prompt)])
    out = hf.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), max_new_tokens=12, do_sample=False)
    expected = greedy(ours, prompt_ids, 12)
    assert out.shape[1] > prompt_ids.shape[1]
    assert out[0].tolist() == expected[0, : out.shape[1]].tolist()
    assert hf_tokenizer.decode(out[0]) == tokenizer.decode(out[0].tolist())
    check_padded_batches(hf, ours, [tokenizer.encode(p) for p in ("ROMEO:\nBut soft", "JULIET:\nO Romeo, Romeo, wherefore")])


def check_padded_batches(hf, ours, prompts: list[list[int]]) -> None:
    """Prompts of unequal lengths in one padded batch, as Hugging Face users batch them: right
    padding leaves each row's logits its own (a causal model), and greedy generate() on a
    left-padded batch continues each prompt as it would alone, or, for a model that does not
    decode left padding exactly, is refused."""
    width = max(map(len, prompts))

    def padded(left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [([0] * (width - len(p)) + p) if left else (p + [0] * (width - len(p))) for p in prompts]
        masks = [([0] * (width - len(p)) + [1] * len(p)) if left else ([1] * len(p) + [0] * (width - len(p))) for p in prompts]
        return torch.tensor(rows), torch.tensor(masks)

    ids, mask = padded(left=False)
    with torch.no_grad():
        logits = hf(input_ids=ids, attention_mask=mask).logits
        for row, prompt in enumerate(prompts):
            assert (logits[row, : len(prompt)] - ours(torch.tensor([prompt]))[0][0]).abs().max() < 1e-5
    ids, mask = padded(left=True)
    if type(hf).__name__ == "SlmlabForCausalLM" and not ours.decodes_padded():
        with pytest.raises(ValueError, match="does not decode left-padded batches exactly"):
            hf.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
        return
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    for row, prompt in enumerate(prompts):
        alone = greedy(ours, torch.tensor([prompt]), 8)[0, len(prompt) :].tolist()
        assert out[row, width:].tolist() == alone[: out.shape[1] - width]


@pytest.mark.slow
def test_a_plugin_model_loads_in_a_fresh_process_from_its_embedded_source(tmp_path, text_corpus):
    """The user's side: a new Python process that never imported the plugin loads the export."""
    run = trained_run(tmp_path, text_corpus, "gated", {"gated_attention": {"enabled": True}}, plugins=[GATED])
    export_hf(run, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["slmlab_plugins"][0]["source"] == Path(GATED).read_text()
    _, ours, _ = load_run(run)
    ids = torch.arange(20).remainder(ours.cfg.vocab_size)[None]
    with torch.no_grad():
        expected = ours(ids)[0][0, -1].tolist()
    code = (
        "import json, sys, torch\nfrom transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'hf')!r}, trust_remote_code=True)\n"
        f"ids = torch.arange(20).remainder({ours.cfg.vocab_size})[None]\n"
        "print(json.dumps(m(input_ids=ids).logits[0, -1].tolist()))\n"
    )
    env = {"SLMLAB_CACHE": str(tmp_path / "cache2"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert max(abs(a - b) for a, b in zip(got, expected)) < 1e-5


def test_a_changed_embedded_plugin_is_refused(tmp_path, text_corpus):
    from slmlab.errors import RunFileError
    from slmlab.export.modeling_slmlab import SlmlabConfig
    from slmlab.export.remote import build_from_hf_config

    run = trained_run(tmp_path, text_corpus, "gated", {"gated_attention": {"enabled": True}}, plugins=[GATED])
    export_hf(run, tmp_path / "hf")
    values = json.loads((tmp_path / "hf" / "config.json").read_text())
    values["slmlab_plugins"][0]["source"] += "\nprint('tampered')\n"
    values["slmlab_plugins"][0]["spec"] = str(tmp_path / "elsewhere" / "gated_attention.py")
    with pytest.raises(RunFileError, match="does not match its sha256"):
        build_from_hf_config(SlmlabConfig(**{k: v for k, v in values.items() if k.startswith("slmlab_")}))


def test_an_embedded_plugin_runs_its_own_source_whatever_the_cache_holds(tmp_path, monkeypatch):
    """The export's source is checked against its SHA-256, not the cached copy of it: a damaged
    copy is written again (it used to be refused with "export the run again", which could not
    help), and a changed source is refused even when an intact copy sits in the cache."""
    import hashlib

    from slmlab import plugins
    from slmlab.errors import RunFileError

    monkeypatch.setattr(plugins, "_active", {})
    source = "ORIGIN = 'the export'\n"
    digest = hashlib.sha256(source.encode()).hexdigest()
    spec = str(tmp_path / "idea.py")
    cached = tmp_path / "cache" / digest / f"{plugins.module_name(spec)}.py"
    cached.parent.mkdir(parents=True)
    cached.write_text("ORIGIN = 'a damaged cache'\n")
    assert plugins.activate_embedded([{"spec": spec, "sha256": digest, "source": source}], tmp_path / "cache") == [spec]
    assert sys.modules[plugins.module_name(spec)].ORIGIN == "the export" and cached.read_text() == source
    changed = {"spec": str(tmp_path / "other.py"), "sha256": digest, "source": source + "ORIGIN = 'changed'\n"}
    (tmp_path / "cache" / digest / f"{plugins.module_name(changed['spec'])}.py").write_text(source)
    with pytest.raises(RunFileError, match="does not match its sha256"):
        plugins.activate_embedded([changed], tmp_path / "cache")


def test_native_layouts_are_refused_with_their_reason_and_auto_falls_back(tmp_path, text_corpus):
    run = trained_run(tmp_path, text_corpus, "partial", {**MODERN, "rope_fraction": 0.5})
    with pytest.raises(ConfigError, match=r"cannot be exported as native llama: .*rotates 8 of 16 dimensions.*--layout remote"):
        export_hf(run, tmp_path / "a", layout="llama")
    with pytest.raises(ConfigError, match="GPT-2 has learned positions"):
        export_hf(run, tmp_path / "b", layout="gpt2")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    remote = export_hf(run, tmp_path / "c")
    assert remote.layout == "remote"  # loading it: the model and, as AutoTokenizer reads config.json too, its tokenizer
    loads = f"AutoModelForCausalLM and AutoTokenizer .from_pretrained({str(tmp_path / 'c')!r}, trust_remote_code=True)"
    assert loads in remote.describe()  # the folder itself, which the user can paste (it said OUT)


def test_a_baseline_may_also_be_exported_as_remote_code(tmp_path, text_corpus):
    run = trained_run(tmp_path, text_corpus, "base")
    assert export_hf(run, tmp_path / "hf", layout="remote").max_abs_diff < 1e-5


def test_export_never_overwrites_a_folder_and_says_so_in_one_line(tmp_path, text_corpus, capsys):
    run = trained_run(tmp_path, text_corpus, "base")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert main(["export", str(run), "--to", "hf", str(tmp_path / "taken")]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    assert main(["export", str(tmp_path / "nope"), "--to", "hf", str(tmp_path / "x")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["export", str(run), "--to", "hf", str(tmp_path / "ok")]) == 0
    out, err = capsys.readouterr()
    assert "exported as gpt2" in out and "Writing model shards" not in err and "Loading weights" not in err  # transformers' bars


def test_a_plugin_buffer_that_no_checkpoint_holds_is_computed_again_when_loaded(tmp_path, text_corpus):
    """transformers builds a remote-code model on the meta device, so a non-persistent buffer (the
    `new-variant --kind mlp` skeleton's power p, a plugin's table of constants) came back as
    uninitialised memory and every such export failed its own logit check. The loaded model
    now takes those buffers from a fresh build, leaving torch's random state alone."""
    from slmlab.analysis.scaffold import write_variant

    write_variant("relu2", "mlp", tmp_path / "ideas")
    run = trained_run(tmp_path, text_corpus, "relu2", {"mlp": "relu2"}, plugins=[str(tmp_path / "ideas" / "relu2.py")])
    assert export_hf(run, tmp_path / "hf").max_abs_diff < 1e-5
    hf, _ = AutoModelForCausalLM.from_pretrained(
        tmp_path / "hf", trust_remote_code=True, dtype=torch.bfloat16, output_loading_info=True
    )
    assert {float(block.mlp.power) for block in hf.model.blocks} == {2.0}
    hf.model.blocks[0].mlp.power.fill_(5.0)
    state = torch.get_rng_state()
    hf.restore_computed_buffers()
    assert torch.equal(torch.get_rng_state(), state) and float(hf.model.blocks[0].mlp.power) == 2.0


def test_an_export_that_fails_its_logit_check_leaves_no_folder(tmp_path, text_corpus, monkeypatch):
    from slmlab.export import hf

    run = trained_run(tmp_path, text_corpus, "base")
    monkeypatch.setattr(hf, "TOLERANCE", -1.0)
    with pytest.raises(ConfigError, match="nothing was written to"):
        export_hf(run, tmp_path / "out" / "hf")
    assert list((tmp_path / "out").iterdir()) == []


def test_an_export_is_readable_as_the_umask_says_and_never_samples_a_padded_id(tmp_path, text_corpus):
    """The folder is staged in a private temp folder and safetensors writes 0o600: the export gets
    the modes mkdir and open() give. An embedding padded past the tokenizer (64 > the char
    vocabulary) has its extra ids suppressed in transformers' sampling too."""
    umask = os.umask(0o022)
    os.umask(umask)
    run = trained_run(tmp_path, text_corpus, "padded", {"vocab_size": 64})
    export_hf(run, tmp_path / "hf")
    modes = {p.name: p.stat().st_mode & 0o777 for p in [tmp_path / "hf", *(tmp_path / "hf").iterdir()]}
    expected = {name: 0o777 & ~umask if name == "hf" else 0o666 & ~umask for name in modes}
    assert modes == expected
    _, _, tokenizer = load_run(run)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    prompt = torch.tensor([tokenizer.encode("ROMEO")] * 4)
    torch.manual_seed(0)
    out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=40, do_sample=True, temperature=5.0)
    assert out.shape[1] > prompt.shape[1] and int(out.max()) < tokenizer.vocab_size < 64


def test_a_padded_batch_holds_each_rows_tokens_as_one_run(device):
    """masked_logits (the remote-code model's forward) reads a mask of 0/1 whose 1s are one run
    per row; any other mask is refused in one line rather than read as something else."""
    cfg = config_from_dict(
        {"model": {"n_layer": 1, "n_head": 2, "d_model": 16, "block_size": 16, "vocab_size": 11}, "data": {"seq_len": 16}}
    )
    model = build_model(cfg.model).eval().to(device)
    ids = torch.arange(12, device=device).remainder(11).reshape(2, 6)
    with torch.no_grad():
        assert torch.equal(masked_logits(model, ids, torch.ones_like(ids)), model(ids)[0])
        for mask, message in (
            ([[1, 1, 0, 1, 1, 1], [1] * 6], "one run"),
            ([[0] * 6, [1] * 6], "one run"),
            ([[1, 1, 2, 1, 1, 1], [1] * 6], "must be 0/1"),
            ([[1] * 5, [1] * 5], "must be 0/1 of the input_ids' shape"),
        ):
            with pytest.raises(ValueError, match=message):
                masked_logits(model, ids, torch.tensor(mask, device=device))


@pytest.mark.parametrize("kind", ["byte", "char", "bpe"])
def test_tokenizers_convert_id_for_id(tmp_path, text_corpus, kind):
    from slmlab.config import DataConfig
    from slmlab.data.tokenizer_kinds import train_tokenizer

    texts = [p.read_text() for p in sorted(text_corpus.rglob("*.txt"))]
    tokenizer = train_tokenizer(DataConfig(tokenizer=kind, vocab_size=300), texts)
    hf = to_hf_tokenizer(tokenizer, 64)
    samples = [*texts[:2], "  two  spaces , and\n\n", "O Romeo, Romeo?"]
    if kind != "char":
        samples += ["naïve café — ünïcödé 🙂", "tabs\tand\r\nreturns"]
    for text in samples:
        ids = tokenizer.encode(text)
        assert hf(text)["input_ids"] == ids
        assert hf.decode(ids) == tokenizer.decode(ids) == text
    if kind == "bpe":
        assert hf.eos_token == "[EOS]" and hf.eos_token_id == tokenizer.eos_id


def test_char_tokenizer_refuses_unknown_characters_like_slmlab(text_corpus):
    from slmlab.data.tokenizers import CharTokenizer

    hf = to_hf_tokenizer(CharTokenizer("abc \n"), 16)
    assert hf("ab c")["input_ids"] == [2, 3, 1, 4]
    with pytest.raises(Exception, match="UNK|unk|vocabulary"):
        hf("abz")


@pytest.mark.network
def test_gpt2_tokenizer_converts_id_for_id():
    from slmlab.data.corpora.fetch import fetch_gpt2_tokenizer
    from slmlab.data.tokenizers import GPT2Tokenizer

    tokenizer = GPT2Tokenizer(fetch_gpt2_tokenizer())
    hf = to_hf_tokenizer(tokenizer, 1024)
    for text in ["Hello world", "  It's 2026's   test\n\nof GPT-2's tokenizer: naïve café 🙂<|endoftext|>", "1234567 ,,, !!!"]:
        ids = tokenizer.encode(text)
        assert hf(text)["input_ids"] == ids
        assert hf.decode(ids) == text
    assert hf.eos_token_id == 50256
