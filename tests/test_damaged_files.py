"""Every damaged or hostile file is one line naming the file, never a traceback (reliability issue,
class 4), and damaged token files are never trained on (class 3). Each file a run or the cache
holds is damaged in each way (random bytes, valid JSON of the wrong shape, empty, deleted), then
read by the verbs that read it."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from slmlab.cli import main

from .conftest import one_line_error, write_micro_toml

RANDOM = random.Random(20261123).randbytes(64) + b"\xff\xfe\x00"  # the same bytes in every run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished micro run (and its token cache), copied fresh for every case."""
    root = tmp_path_factory.mktemp("damaged")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(8):
        (corpus / f"doc{i}.txt").write_text(f"Document {i}. " + "To be, or not to be, that is the question.\n" * 30)
    config = write_micro_toml(root / "micro.toml", corpus, root, steps=6, every=3)
    assert main(["train", str(config), "--no-progress", "--name", "run"]) == 0
    return root


@pytest.fixture
def copy(trained, tmp_path):
    """(run dir, cache dir) copies that a case may damage."""
    shutil.copytree(trained, tmp_path / "lab")
    lab = tmp_path / "lab"
    cfg = json.loads((lab / "runs" / "run" / "config.json").read_text())
    cfg["out_dir"], cfg["data"]["cache_dir"] = str(lab / "runs"), str(lab / "cache")
    cfg["data"]["source"] = str(lab / "corpus")
    (lab / "runs" / "run" / "config.json").write_text(json.dumps(cfg))
    return lab / "runs" / "run", lab / "cache"


DAMAGES = {
    "random bytes": lambda p: p.write_bytes(RANDOM),
    "wrong shape": lambda p: p.write_text('[1, "two", {"three": null}]'),
    "wrong types": lambda p: p.write_text('{"step": "six", "val_loss": [], "model": 5, "train": "x", "tokens": 3}'),
    "empty": lambda p: p.write_bytes(b""),
    "deleted": lambda p: p.unlink(),
}


def _verbs(run: Path) -> dict[str, list[str]]:
    return {
        "eval": ["eval", str(run), "--batches", "1"],
        "report": ["report", str(run)],
        "resume": ["train", "--resume", str(run), "--train.steps", "9", "--no-progress"],
        "generate": ["generate", str(run), "--prompt", "To", "--max-new-tokens", "4"],
    }


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize(
    ("name", "verbs"),
    [
        ("config.json", ["eval", "report", "resume"]),
        ("summary.json", ["report", "eval"]),
        ("metrics.jsonl", ["report", "resume"]),
        ("tokenizer.json", ["eval", "generate", "resume"]),
        ("checkpoints/latest", ["resume"]),
        ("checkpoints/step_000006.state.pt", ["resume"]),
        ("checkpoints/step_000006.sha256.json", ["resume"]),
        ("final.safetensors", ["eval", "generate"]),
    ],
)
def test_a_damaged_run_file_is_one_line_naming_it(copy, capsys, name, verbs, damage):
    run, _ = copy
    path = run / name
    if name in ("summary.json", "checkpoints/latest", "checkpoints/step_000006.state.pt") and damage == "deleted":
        pytest.skip("a run without it is a run that has not finished / not checkpointed: covered elsewhere")
    if name == "metrics.jsonl" and damage in ("empty", "deleted"):
        pytest.skip("an empty metrics log is a run that logged nothing yet, not damage")
    if name == "checkpoints/step_000006.sha256.json" and damage == "deleted":
        pytest.skip("a checkpoint written before checksums existed loads unverified")
    if name.startswith("checkpoints/"):
        (run / "summary.json").unlink()  # as if it stopped at the checkpoint: resume reads it
    DAMAGES[damage](path)
    for verb in verbs:
        code = main(_verbs(run)[verb])
        if code == 0:  # only acceptable where the damaged file is not needed by this verb
            capsys.readouterr()
            pytest.fail(f"{verb} accepted a damaged {name} ({damage})")
        assert code == 2
        one_line_error(capsys, Path(name).name, "checkpoint", "run directory")


@pytest.mark.parametrize("damage", ["random bytes", "deleted"])
def test_a_finished_runs_damaged_final_weights_are_written_again_by_a_resume(copy, capsys, damage):
    """A finished run's final.safetensors damaged or deleted: every verb refused it, and a resume
    said the run had finished, though its last checkpoint holds the same weights. The error says
    so, and the resume writes the file again, with the weights the run wrote."""
    run, _ = copy
    written = {name: tensor.clone() for name, tensor in load_file(run / "final.safetensors").items()}
    DAMAGES[damage](run / "final.safetensors")
    assert main(_verbs(run)["eval"]) == 2
    error = one_line_error(capsys, "final.safetensors")
    assert error.endswith(
        f"read its checkpoint step_000006 (--checkpoint step_000006), or write it again from that checkpoint of the same "
        f"step: `slmlab train --resume {run}`"
    )
    threads = json.loads((run / "config.json").read_text())["train"]["threads"]
    assert main(["train", "--resume", str(run), "--no-progress", "--train.threads", str(threads + 1)]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["threads"] == threads  # no step was measured there
    again = load_file(run / "final.safetensors")
    assert again.keys() == written.keys() and all(torch.equal(again[k], written[k]) for k in written)
    assert main(_verbs(run)["eval"]) == 0
    shutil.rmtree(run / "checkpoints")
    (run / "final.safetensors").unlink()
    assert main(_verbs(run)["eval"]) == 2  # nothing to write it from
    assert one_line_error(capsys, "final.safetensors").endswith("finished training with it: restore it from a copy of the run")


def test_a_training_state_without_the_optimizer_is_refused(copy, capsys):
    run, _ = copy
    (run / "summary.json").unlink()
    (run / "checkpoints" / "step_000006.sha256.json").unlink()
    state_path = run / "checkpoints" / "step_000006.state.pt"
    state = torch.load(state_path, weights_only=True)
    del state["optimizer"]
    torch.save(state, state_path)
    assert main(_verbs(run)["resume"]) == 2
    assert "'optimizer' is missing" in one_line_error(capsys, "step_000006.state.pt")


def _token_dir(cache: Path) -> Path:
    (manifest,) = cache.glob("tokens/*/manifest.json")
    return manifest.parent


@pytest.mark.parametrize(
    "damage",
    ["zeroed", "one bit flipped", "truncated", "deleted", "manifest random bytes", "manifest wrong shape", "manifest empty"],
)
def test_damaged_token_files_are_never_trained_on(copy, capsys, damage):
    run, cache = copy
    tokens = _token_dir(cache)
    train_bin, manifest = tokens / "train.bin", tokens / "manifest.json"
    size = train_bin.stat().st_size
    if damage == "zeroed":  # today this trained on all-newline data and exited 0
        train_bin.write_bytes(bytes(size))
    elif damage == "one bit flipped":
        data = bytearray(train_bin.read_bytes())
        data[size // 3] ^= 0x04
        train_bin.write_bytes(bytes(data))
    elif damage == "truncated":
        train_bin.write_bytes(train_bin.read_bytes()[: size // 2])
    elif damage == "deleted":
        train_bin.unlink()
    else:
        DAMAGES[damage.removeprefix("manifest ")](manifest)
    argv = ["train", str(run.parent.parent / "micro.toml"), "--no-progress", "--name", "again"]
    cfg_overrides = ["--data.source", json.loads((run / "config.json").read_text())["data"]["source"]]
    cfg_overrides += ["--data.cache_dir", str(cache), "--out_dir", str(run.parent)]
    assert main([*argv, *cfg_overrides]) == 2
    err = one_line_error(capsys, "train.bin", "manifest.json")
    assert str(tokens) in err and "rebuilds" in err
    assert not (run.parent / "again").exists()
    assert main(_verbs(run)["eval"]) == 2  # eval reads the same cache
    capsys.readouterr()


@pytest.mark.parametrize("damage", ["random bytes", "other valid json"])
def test_a_damaged_cached_tokenizer_is_rebuilt_with_a_warning(copy, caplog, damage):
    """Its file name records its SHA-256: JSON still valid but mapping ids to other characters
    would otherwise tokenize the next run's corpus in silence."""
    run, cache = copy
    (cached,) = cache.glob("tokenizers/*.json")
    intact = cached.read_text()
    other = json.loads(intact)
    other["chars"] = other["chars"].replace(other["chars"][-1], "\u00e9")
    cached.write_bytes(RANDOM) if damage == "random bytes" else cached.write_text(json.dumps(other))
    config = run.parent.parent / "micro.toml"
    source = json.loads((run / "config.json").read_text())["data"]["source"]
    argv = ["train", str(config), "--no-progress", "--name", "again", "--data.source", source]
    assert main([*argv, "--data.cache_dir", str(cache), "--out_dir", str(run.parent)]) == 0
    assert "training the tokenizer again" in caplog.text
    assert cached.read_text() == intact  # trained again into the same file, whole


def test_weights_that_sample_nan_are_one_line(copy, capsys):
    from safetensors.torch import load_file, save_file

    run, _ = copy
    weights = load_file(run / "final.safetensors")
    weights = {k: torch.full_like(v, float("nan")) for k, v in weights.items()}
    save_file(weights, run / "final.safetensors")
    summary = json.loads((run / "summary.json").read_text())
    summary.pop("final_sha256")
    (run / "summary.json").write_text(json.dumps(summary))
    assert main(_verbs(run)["generate"]) == 2
    assert "not finite" in one_line_error(capsys, "final.safetensors", "weights")


@pytest.mark.parametrize(
    "content", [b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR.", RANDOM, b""], ids=["hostile pickle", "random bytes", "empty"]
)
def test_a_hostile_or_damaged_pytorch_model_bin_is_one_line_in_surgery(tmp_path, content):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models

    from slmlab.errors import SlmlabError
    from slmlab.persona.surgery import load_hf_model

    base = tmp_path / "base"
    config = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(base)
    words = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>").save_pretrained(base)
    (base / "model.safetensors").unlink()
    (base / "pytorch_model.bin").write_bytes(content)
    with pytest.raises(SlmlabError, match="cannot load") as caught:
        load_hf_model(base, torch.device("cpu"))
    assert "\n" not in str(caught.value)


def test_a_token_file_checksum_is_recorded_and_matches(copy):
    _, cache = copy
    tokens = _token_dir(cache)
    manifest = json.loads((tokens / "manifest.json").read_text())
    import hashlib

    assert manifest["sha256"]["train.bin"] == hashlib.sha256((tokens / "train.bin").read_bytes()).hexdigest()
    assert np.fromfile(tokens / "train.bin", dtype=manifest["dtype"]).size == manifest["tokens"]["train"]


@pytest.mark.parametrize(
    ("name", "damage"),
    [("ablations.md", "random bytes"), ("quantize.md", "random bytes"), ("persona_eval.json", "random bytes"),
     ("persona_eval.json", "wrong shape"), ("persona_eval.json", "wrong types"), ("persona_gain.json", "random bytes"),
     ("persona_gain.json", "wrong shape"), ("persona_gain.json", "wrong types")],
)  # fmt: skip
def test_report_names_a_damaged_file_another_verb_left(copy, capsys, name, damage):
    run, _ = copy
    (run / name).write_text("placeholder")
    DAMAGES[damage](run / name)
    assert main(["report", str(run)]) == 2
    one_line_error(capsys, name)


@pytest.mark.parametrize("damage", ["random bytes", "wrong shape", "wrong types", "empty"])
def test_report_names_damaged_sweep_results(tmp_path, capsys, damage):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "results.json").write_text("{}")
    DAMAGES[damage](sweep / "results.json")
    assert main(["report", str(sweep)]) == 2
    one_line_error(capsys, "results.json")


@pytest.mark.parametrize("damage", ["random bytes", "wrong shape", "wrong types", "deleted"])
def test_a_damaged_self_area_description_is_one_error(tmp_path, damage):
    transformers = pytest.importorskip("transformers")
    from slmlab.errors import CheckpointError
    from slmlab.persona.surgery import insert_self_area, load_self_area, save_self_area
    from slmlab.variants.self_area import SelfAreaConfig

    def base():
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))

    save_self_area(insert_self_area(base(), SelfAreaConfig(enabled=True, self_dim=8)), tmp_path / "area", "gpt2")
    DAMAGES[damage](tmp_path / "area" / "self_area.json")
    with pytest.raises(CheckpointError, match="self_area.json"):
        load_self_area(base(), tmp_path / "area")


def test_self_area_weights_with_a_flipped_byte_are_refused(tmp_path):
    """safetensors checks a file's header and length, not its tensors' bytes: the description
    records the weights' SHA-256 and loading checks it."""
    transformers = pytest.importorskip("transformers")
    from slmlab.errors import CheckpointError
    from slmlab.persona.surgery import insert_self_area, load_self_area, save_self_area
    from slmlab.variants.self_area import SelfAreaConfig

    def base():
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))

    save_self_area(insert_self_area(base(), SelfAreaConfig(enabled=True, self_dim=8)), tmp_path / "area", "gpt2")
    load_self_area(base(), tmp_path / "area")
    weights = tmp_path / "area" / "self_area.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])  # the last tensor's last values
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"self_area.safetensors is damaged \(its SHA-256 does not match"):
        load_self_area(base(), tmp_path / "area")


def test_a_prompt_suite_that_is_not_utf8_is_one_line(copy, capsys, tmp_path):
    run, _ = copy
    suite = tmp_path / "suite.jsonl"
    suite.write_bytes(b'{"id": "a", "prompt": "To"}\n' + RANDOM)
    assert main(["prompts", str(run), "--suite", str(suite)]) == 2
    assert "not UTF-8 text (bad byte 0x" in one_line_error(capsys, "suite.jsonl")  # and where it is


def test_a_config_edited_into_another_model_the_weights_still_fit_is_refused(copy, capsys):
    """norm_eps (or rope_theta, local_block) changes the model without changing a weight's shape:
    the weights files record the config they were trained under, and loading compares them."""
    run, _ = copy
    config = json.loads((run / "config.json").read_text())
    config["model"]["local_kernel"] = "windows"  # how block-local attention is computed: may change
    (run / "config.json").write_text(json.dumps(config))
    assert main(_verbs(run)["eval"]) == 0
    config["model"]["norm_eps"] = 0.1
    (run / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    for verb in ("eval", "generate", "resume"):
        assert main(_verbs(run)[verb]) == 2, verb
        err = one_line_error(capsys, "config.json")
        assert "gives model.norm_eps = 0.1, but" in err and "was trained with 1e-05" in err, err


@pytest.mark.parametrize(
    "edit, says",
    [  # a variant's setting was shown as its whole section's repr (hundreds of characters)
        (
            lambda c: c["model"]["smat"].update(use_S=True),
            "gives model.smat.use_S = true, but final.safetensors was trained with false",
        ),
        (lambda c: c["model"].pop("smat"), None),  # the section's defaults: the same model
        (lambda c: c.pop("model"), "lacks the [model] every run records"),  # was: 'model.vocab_size must be set'
        (  # was read without a word: every verb reads tokenizer.json, the record misstated the run
            lambda c: c["data"].update(tokenizer="byte"),
            "says data.tokenizer = 'byte' but",
        ),
        (lambda c: [c.pop("data"), c.pop("train")], "lacks the [data] and [train] every run records"),
    ],
)
def test_a_config_edited_in_a_section_is_named_by_its_dotted_key(copy, capsys, edit, says):
    run, _ = copy
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    if says is None:
        assert main(_verbs(run)["eval"]) == 0
        return
    assert main(_verbs(run)["eval"]) == 2
    err = one_line_error(capsys, "config.json")
    assert says in err and len(err) < 300, err


def test_a_tokenizer_edited_into_another_valid_one_is_refused(copy, capsys):
    """A finished run's summary records its tokenizer's SHA-256: a tokenizer.json that still
    parses, of the same size, but maps one id to another character would decode and score other
    text without a word (and a resume would record it as the run's)."""
    run, _ = copy
    tokenizer = json.loads((run / "tokenizer.json").read_text())
    chars = tokenizer["chars"]
    tokenizer["chars"] = chars.replace(chars[-1], "\u00e9")  # 'é' for the last character: same size, sorted alike
    (run / "tokenizer.json").write_text(json.dumps(tokenizer))
    for verb in ("eval", "generate", "resume"):
        assert main(_verbs(run)[verb]) == 2, verb
        assert "is not the tokenizer" in one_line_error(capsys, "tokenizer.json")
    assert "tokenizer_sha256" in json.loads((run / "summary.json").read_text())


def test_a_tokenizer_larger_than_the_runs_model_is_one_line(copy, capsys):
    """tokenizer.json swapped for another run's (256 byte tokens for a ~30-token char model): its
    ids would index past the embedding. Checked without the SHA-256 a finished run's summary
    records (which refuses it first), as for an unfinished run or one of older slmlab."""
    run, _ = copy
    summary = json.loads((run / "summary.json").read_text())
    del summary["tokenizer_sha256"]
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "tokenizer.json").write_text('{"slmlab_tokenizer": "byte"}')
    for verb in ("eval", "generate", "resume"):
        assert main(_verbs(run)[verb]) == 2, verb
        assert "has 256 tokens but the run's model has" in one_line_error(capsys, "tokenizer.json")
