"""Bad arguments are refused before any work starts, in one line, and leave nothing behind
(reliability issue, class 5)."""

from __future__ import annotations

import argparse

import pytest

from slmlab.cli import main
from slmlab.config import ConfigError, config_from_dict
from tests.conftest import one_line_error


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "CONFIG", "--train.lr", "nan"],
        ["train", "CONFIG", "--train.lr", "inf"],
        ["train", "CONFIG", "--train.lr", "-inf"],
        ["generate", "RUN", "--prompt", "a", "--top-p", "0"],
        ["generate", "RUN", "--prompt", "a", "--top-p", "-0.5"],
        ["generate", "RUN", "--prompt", "a", "--top-p", "1.5"],
        ["generate", "RUN", "--prompt", "a", "--top-k", "-5"],
        ["generate", "RUN", "--prompt", "a", "--temperature", "-1"],
        ["generate", "RUN", "--prompt", "a", "--temperature", "nan"],
        ["generate", "RUN", "--prompt", "a", "--max-new-tokens", "-5"],
        ["generate", "RUN", "--prompt", "a", "--num-samples", "0"],
        ["generate", "RUN", "--prompt", "a", "--num-samples", str(10**21)],  # an OverflowError traceback
        ["diagnose", "CONFIG", "--batch-size", str(2**63)],  # ValueError: Maximum allowed dimension exceeded
        ["eval", "RUN", "--batches", "0"],
        ["eval", "RUN", "--context-lengths", "abc"],
        ["eval", "RUN", "--context-lengths", "64,-1"],
        ["eval", "RUN", "--context-lengths", ",,"],  # no length at all: a plain eval ran instead
        ["eval", "RUN", "--context-lengths", "64,128,64"],  # a row twice
        ["info", "CONFIG", "--batch-size", "-4"],
        ["info", "CONFIG", "--batch-size", "0"],  # took the config's batch in silence
        ["info", "CONFIG", "--seq-len", "0"],
        ["train", "CONFIG", "--out_dir", "A_FILE"],
        ["train", "CONFIG", "--nproc", "0"],
        ["sweep", "SWEEP", "--jobs", "0"],
        ["train", "CONFIG", "--train.device", "meta"],
        ["train", "CONFIG", "--train.device", "cpu:1"],
        ["train", "CONFIG", "--train.device", "xpu"],
        ["info", "CONFIG", "--train.device", "cuda0"],  # info reads no device: it took any name
        ["train", "CONFIG", "--train.seed", "-1"],
        ["generate", "RUN", "--prompt", "a", "--seed", "-1"],
        ["generate", "RUN", "--prompt", "a", "--seed", str(2**64)],
        ["check", "CONFIG", "--seed", str(2**64)],
        ["train", "CONFIG", "--model.n_layer", str(10**20)],  # spent hours creating layers
        ["train", "CONFIG", "--data.text_field", "content"],  # plain text files: ignored in silence
        ["data", "prepare", "CONFIG", "--data.source", "shakespeare", "--data.doc_separator", "<EOS>"],
        ["sweep", "SWEEP", "--data.text_field", "body"],
        ["info", "CONFIG", "--model.block_size", str(10**17)],
        ["tokenizer", "train", "CONFIG", "--data.tokenizer", "bpe", "--data.vocab_size", str(2**31)],  # a Rust abort
        ["data", "prepare", "CONFIG", "--model.n_layer", "3"],  # data prepare reads only data.*: ignored in silence
        ["train", "SWEEP"],  # the wrong kind of config: "unknown config key 'base'"
        ["sweep", "CONFIG", "--dry-run"],  # "unknown config key 'model'"
        ["tokenizer", "train", "CONFIG", "--train.lr=1"],
        ["train", "CONFIG", "--out_dir", '"runs\\u0000x"'],  # ValueError: embedded null byte
        ["train", "CONFIG", "--data.cache_dir", '"c\\u0000"'],
        ["prompts", "RUN", "--out", "report\x00.md"],  # from a caller of main(): a shell cannot pass one
        ["viz", "attention", "RUN", "--prompt", "a", "--out", "attention.png"],  # a folder of that name was made
        ["export", "RUN", "model.safetensors", "--to", "hf"],
        ["new-variant", "idea", "--out", "idea.py"],
        ["surgery", "--hf-model", "x", "--persona-data", "x", "--out", "self_area.safetensors"],
    ],
)
def test_a_bad_argument_is_one_line_and_nothing_is_written(argv, micro_toml, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative output would be written here
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'name = "s"\nbase = "{micro_toml}"\n[variants.a]\n')
    names = {"CONFIG": str(micro_toml), "RUN": str(tmp_path / "runs" / "none"), "A_FILE": str(a_file), "SWEEP": str(sweep)}
    before = sorted(tmp_path.rglob("*"))
    assert _exit_code([names.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "error" in err and "\n" not in err and "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before


def test_a_plugin_path_with_a_nul_character_is_one_line(micro_toml, tmp_path, capsys):
    config = tmp_path / "with_plugin.toml"
    config.write_text('plugins = ["idea\\u0000.py"]\n' + micro_toml.read_text())
    assert _exit_code(["train", str(config)]) == 2
    assert "plugins: 'idea\\x00.py' holds a NUL character" in capsys.readouterr().err


def _exit_code(argv: list[str]) -> int:
    """main's return code, or the code argparse exits with."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_a_curriculum_with_a_bad_later_phase_fails_before_the_first_phase_trains(micro_toml, tmp_path, capsys):
    config = tmp_path / "curriculum.toml"
    config.write_text(
        micro_toml.read_text() + '\n[[phases]]\nname = "A"\n[[phases]]\nname = "B"\nsteps = 4\n'
        "[phases.mixture]\nprose = 1.0\nnovels = 1.0\n"
    )
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "phases[1] (B)" in err and "novels" in err and "\n" not in err
    assert not (tmp_path / "runs" / "curriculum").exists()


def test_non_finite_numbers_are_refused_in_every_section():
    for section, key in (("train", "lr"), ("train", "grad_clip"), ("model", "dropout"), ("data", "val_fraction")):
        with pytest.raises(ConfigError, match=f"{section}.{key}"):
            config_from_dict({section: {key: float("nan")}})


@pytest.mark.parametrize("name", ["meta", "xpu", "cpu:1", "CPU", "", "bogus", "cuda:99"])
def test_a_device_slmlab_cannot_run_on_is_one_line(name):
    """Strings torch parses (meta, xpu, cpu:1) are refused too, not only the ones it cannot."""
    from slmlab.training.runtime import resolve_device

    with pytest.raises(ConfigError, match=f"device '{name}'"):
        resolve_device(name)
    assert resolve_device("cpu").type == "cpu" and resolve_device("auto").type in ("cpu", "cuda", "mps")


def test_text_that_is_not_utf8_is_one_line_wherever_it_enters(micro_toml, tmp_path, capsys):
    """A --prompt holding a byte that is not UTF-8 (Python reads it as a lone surrogate) and a
    suite line with JSON's "\\udc00" ended in a UnicodeEncodeError traceback from the tokenizer."""
    assert main(["train", str(micro_toml), "--no-progress", "--name", "r"]) == 0
    run = str(tmp_path / "runs" / "r")
    capsys.readouterr()
    assert main(["generate", run, "--prompt", "T\udcff", "--max-new-tokens", "2"]) == 2
    assert "argument 'T\\udcff' is not UTF-8 text" in capsys.readouterr().err
    suite = tmp_path / "suite.jsonl"
    suite.write_text('{"id": "a", "prompt": "T"}\n{"id": "b", "prompt": "T\\udc00"}\n')
    assert main(["prompts", run, "--suite", str(suite)]) == 2
    assert "suite.jsonl:2: holds \\udc00, half of a UTF-16 pair" in capsys.readouterr().err


def test_generate_refuses_sampling_options_it_cannot_honour():
    import torch

    from slmlab.config import ModelConfig
    from slmlab.model import build_model

    model = build_model(ModelConfig(n_layer=1, n_head=2, d_model=16, block_size=16, vocab_size=11))
    prompt = torch.tensor([[1, 2]])
    for options, says in (({"top_p": 0.0}, "top_p"), ({"temperature": float("nan")}, "temperature"), ({"top_k": -1}, "top_k")):
        with pytest.raises(ConfigError, match=says):
            model.generate(prompt, 3, **options)
        with pytest.raises(ConfigError, match=says):
            model.generate_many([[1], [2, 3]], 3, **options)


def test_an_output_path_that_cannot_be_written_is_one_line(micro_toml, tmp_path, capsys):
    """A folder where a file goes, a file where a folder goes: one line naming the path, and the
    file in the way is left as it was."""
    a_file, a_folder = tmp_path / "notes.txt", tmp_path / "folder"
    a_file.write_text("mine")
    a_folder.mkdir()
    for argv, says in (
        (["tokenizer", "train", str(micro_toml), "--out", str(a_folder)], "is a folder: name a file to write"),
        (["tokenizer", "train", str(micro_toml), "--out", str(a_file / "tok.json")], "a file stands where a folder is needed"),
        (["train", str(micro_toml), "--no-progress", "--out_dir", str(a_file / "runs")], str(a_file)),
    ):
        assert _exit_code(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("slmlab: error:") and says in err and "\n" not in err and "Traceback" not in err, err
    assert a_file.read_text() == "mine" and not any(a_folder.iterdir())


def _leaf_verbs(parser, path=()):
    """(words, parser) of every verb: `generate`, `viz attention`, `data download`, ..."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _leaf_verbs(sub, (*path, name))
            return
    yield path, parser


def _minimal_argv(words, parser) -> list[str]:
    """The verb with a placeholder for each required argument (the first choice where it has any) and
    for the first option of each required group."""
    argv = list(words)
    for action in parser._actions:
        value = str(action.choices[0] if action.choices else "placeholder") if action.choices is not None else "placeholder"
        if not action.option_strings and action.dest not in ("help",) and action.nargs != 0:
            argv.append(value)
        elif action.required:
            argv += [action.option_strings[0], value]
    for group in parser._mutually_exclusive_groups:  # one of them required (--prompt or --prompt-file)
        if group.required:
            argv += [group._group_actions[0].option_strings[0], "placeholder"]
    return argv


TAKES_OVERRIDES = {"train", "sweep", "eval", "diagnose", "info", "check", "persona", "data prepare", "tokenizer train"}
READS_SOURCE_FILES = {"persona-eval", "surgery"}  # data.text_field and data.doc_separator only


def test_a_verb_that_takes_no_overrides_refuses_them_rather_than_ignore_them(capsys):
    """`generate RUN --model.n_layer 3` used to generate from the run as trained, saying nothing."""
    from slmlab.cli.main import build_parser

    verbs = dict(_leaf_verbs(build_parser()))
    assert {
        " ".join(words) for words, p in verbs.items() if p.get_default("takes_overrides")
    } == TAKES_OVERRIDES | READS_SOURCE_FILES
    for words, parser in verbs.items():
        if " ".join(words) in TAKES_OVERRIDES:
            continue
        assert _exit_code([*_minimal_argv(words, parser), "--model.n_layer", "3"]) == 2, words
        err = capsys.readouterr().err.strip()
        if " ".join(words) in READS_SOURCE_FILES:
            assert err.endswith("so ['model.n_layer'] would change nothing"), err
        else:
            assert err == f"slmlab: error: {' '.join(words)} takes no config overrides, got --model.n_layer 3", err


def test_info_on_a_run_refuses_overrides_and_takes_them_on_a_config(micro_toml, tmp_path, capsys):
    assert main(["train", str(micro_toml), "--no-progress", "--name", "r"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "runs" / "r"), "--model.n_layer", "3"]) == 2
    assert "describes the run as trained, so it takes no overrides" in capsys.readouterr().err
    assert main(["info", str(micro_toml), "--model.n_layer", "3"]) == 0
    assert "3 layers" in capsys.readouterr().out


def test_running_out_of_memory_is_one_line_and_leaves_no_run(micro_toml, tmp_path, capsys, monkeypatch):
    """A batch or model too big for the machine ended in the allocator's traceback, and the fresh
    run's folder (config and tokenizer only) made the corrected command need --overwrite."""
    from slmlab.training.step import OptimizerStep

    def too_big(self, step):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 51539607552 bytes. Error code 12 (Cannot allocate memory)"
        )

    with monkeypatch.context() as patched:
        patched.setattr(OptimizerStep, "__call__", too_big)
        assert main(["train", str(micro_toml), "--no-progress", "--name", "big"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slmlab: error: out of memory (one allocation of 48.0 GiB): make the model") and "\n" not in err
    assert not (tmp_path / "runs" / "big").exists()
    assert main(["train", str(micro_toml), "--no-progress", "--name", "big"]) == 0


def test_a_folder_of_runs_given_for_one_run_or_a_config_says_what_to_give(micro_toml, tmp_path, capsys):
    """A sweep's folder given to eval was 'not a run directory' with no word of the runs it holds,
    and a folder given as a config was 'config file not found'."""
    assert main(["train", str(micro_toml), "--no-progress", "--name", "r"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "runs")]) == 2
    assert f"it holds runs (a sweep, or an out_dir): name one, e.g. {tmp_path / 'runs' / 'r'}" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "runs")]) == 2
    assert "is a folder, not a config file: give a .toml file" in capsys.readouterr().err
    run = tmp_path / "runs" / "r"  # a run given as a config: what to give, and how to continue the run instead
    for verb in ("train", "check", "sweep"):
        assert main([verb, str(run)]) == 2
        assert f"{run} is a run directory, not a config file: give the .toml file it was trained from" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "runs")]) == 2  # info takes a config or a run
    assert (
        "is a folder but not a run directory (no config.json): give a .toml config or a run directory; "
        f"it holds runs (a sweep, or an out_dir): name one, e.g. {run}" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "error, size",
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 15.75 GiB total capacity)"), "20 MiB"),
        (
            RuntimeError("MPS backend out of memory (MPS allocated: 1.00 GB). Tried to allocate 256.00 MiB on private pool."),
            "256 MiB",
        ),
        (MemoryError(), None),
    ],
)
def test_every_device_running_out_of_memory_reads_as_such(error, size):
    from slmlab.errors import out_of_memory

    message = out_of_memory(error)
    assert message.startswith(f"out of memory (one allocation of {size})" if size else "out of memory:")
    assert out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert "train.batch_size" in message and "--num-samples" in out_of_memory(error, "generate")
    assert "--batch-size" in out_of_memory(error, "eval") and "train.grad_accum" in out_of_memory(error, "tokenizer train")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["train", "--resume", "RUN", "--name", "other"], "--resume and --name do not go together"),
        (["train", "--resume", "RUN", "--overwrite"], "--resume and --overwrite do not go together"),
        (["train", "CONFIG", "--resume", "RUN"], "--resume and CONFIG do not go together"),
        (["train", "CONFIG", "--from-checkpoint", "step_000010"], "--from-checkpoint applies only with --resume"),
        (["eval", "RUN", "--bucket", "64"], "--bucket applies only with --by-position"),  # the default, given
        (["eval", "RUN", "--context-length", "16"], "--context-length applies only with --by-position or --text"),
        (["eval", "RUN", "--by-position", "--json"], "--json and --by-position do not go together"),
        (["eval", "RUN", "--context-lengths", "16,32", "--json"], "--json and --context-lengths do not go together"),
        (["sweep", "SWEEP", "--dry-run", "--only", "0"], "--dry-run and --only do not go together"),
        (["sweep", "SWEEP", "--slurm", "A_FILE", "--only", "0"], "--slurm and --only do not go together"),
        (["sweep", "SWEEP", "--dry-run", "--jobs", "2"], "--jobs and --dry-run do not go together"),
        (["sweep", "SWEEP", "--sbatch=--partition=gpu"], "--sbatch applies only with --slurm"),
        (["surgery", "--hf-model", "RUN", "--load", "RUN", "--steps", "5"], "--load and --steps do not go together"),
        (["surgery", "--hf-model", "RUN", "--load", "RUN", "--token-dependent"], "--load and --token-dependent"),
        (["surgery", "--hf-model", "RUN", "--max-new-tokens", "5"], "--max-new-tokens applies only with --generate"),
        (["surgery", "--hf-model", "RUN", "--load", "RUN"], "--load applies only with --generate"),  # loaded, then nothing
    ],
)
def test_an_option_the_verb_would_ignore_is_refused(argv, says, micro_toml, tmp_path, capsys):
    """Before, each of these ran and did what it would have done without the option: a resumed run
    kept its name, --overwrite removed nothing, --json printed a table, --sbatch wrote no script."""
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'name = "s"\nbase = "{micro_toml}"\n[variants.a]\n')
    names = {"CONFIG": str(micro_toml), "RUN": str(tmp_path / "none"), "SWEEP": str(sweep), "A_FILE": str(tmp_path / "s.sh")}
    before = sorted(tmp_path.rglob("*"))
    assert main([names.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err
    assert sorted(tmp_path.rglob("*")) == before


def test_given_options_are_those_on_the_command_line_and_every_rule_names_real_options():
    from slmlab.cli.main import build_parser
    from slmlab.cli.options import given_options

    assert given_options(build_parser(), ["eval", "r", "--bucket", "64", "--json"]) == {"RUN", "--bucket", "--json"}
    assert given_options(build_parser(), ["train", "--resume", "r"]) == {"--resume"}  # CONFIG left out, no defaults
    assert given_options(build_parser(), ["viz", "attention", "r", "--prompt=a"]) == {"RUN", "--prompt"}
    parsers, checked = [build_parser()], 0
    while parsers:
        parser = parsers.pop()
        names = {a.option_strings[0] if a.option_strings else (a.metavar or a.dest.upper()) for a in parser._actions}
        parsers += [p for a in parser._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]
        needs, conflicts = parser._defaults.get("option_needs", {}), parser._defaults.get("option_conflicts", [])
        needed = {option for value in needs.values() for option in ((value,) if isinstance(value, str) else value)}
        named = {*needs, *needed, *(a for a, _, _ in conflicts), *(b for _, b, _ in conflicts)}
        assert named <= names, (parser.prog, named - names)
        checked += len(conflicts) + len(needs)
    assert checked >= 20


def test_torchrun_variables_left_in_the_shell_are_named_or_harmless(micro_toml, tmp_path, capsys, monkeypatch):
    """WORLD_SIZE alone ended in a KeyError traceback; a stray RANK=1 silenced the only process
    (it printed no result: only "rank 0" reports)."""
    for env, says in (({"WORLD_SIZE": "2"}, "WORLD_SIZE = 2 is set but RANK"), ({"WORLD_SIZE": "two"}, "WORLD_SIZE = 'two'")):
        with monkeypatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            assert main(["train", str(micro_toml), "--no-progress", "--name", "w"]) == 2
            assert says in capsys.readouterr().err
    assert not (tmp_path / "runs" / "w").exists()
    monkeypatch.setenv("RANK", "1")
    assert main(["train", str(micro_toml), "--no-progress", "--name", "r"]) == 0
    assert "run: " in capsys.readouterr().out


@pytest.mark.parametrize(
    "options, says",
    [
        (["--top-k", "5"], "--top-k filters what is sampled, and --temperature 0 samples nothing (greedy decoding): remove it"),
        (["--top-k", "5", "--top-p", "0.9"], "--top-k and --top-p filter what is sampled, and --temperature 0 samples nothing"),
        (["--num-samples", "3"], "--temperature 0 (greedy decoding) gives the same text every time, so --num-samples 3"),
        (["--seed", "5"], "--seed 5 seeds the sampling, and --temperature 0 samples nothing (greedy decoding): remove it"),
    ],
)
def test_generate_refuses_sampling_options_that_greedy_decoding_ignores(micro_toml, tmp_path, capsys, options, says):
    """--temperature 0 --top-k 5 decoded greedily in silence, and --num-samples 3 printed three copies."""
    assert main(["train", str(micro_toml), "--no-progress", "--name", "r"]) == 0
    capsys.readouterr()
    run = str(tmp_path / "runs" / "r")
    assert main(["generate", run, "--prompt", "T", "--temperature", "0", "--max-new-tokens", "3", *options]) == 2
    assert says in capsys.readouterr().err
    assert main(["generate", run, "--prompt", "T", "--temperature", "0", "--max-new-tokens", "3"]) == 0


def test_generate_refuses_to_ignore_an_end_of_text_token_the_tokenizer_has_not(micro_toml, tmp_path, capsys):
    """--ignore-eos on a char or byte run (no end-of-text token) was taken and did nothing."""
    assert main(["train", str(micro_toml), "--no-progress", "--name", "r"]) == 0
    capsys.readouterr()
    argv = ["generate", str(tmp_path / "runs" / "r"), "--prompt", "T", "--max-new-tokens", "3"]
    assert main([*argv, "--ignore-eos"]) == 2
    assert "char tokenizer has no end-of-text token" in one_line_error(capsys, "--ignore-eos would change nothing: ")
    assert main(argv) == 0
