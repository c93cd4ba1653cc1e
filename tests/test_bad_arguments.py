"""Bad arguments are refused before any work starts, in one line, and leave nothing behind
(reliability issue, class 5)."""

from __future__ import annotations

import pytest

from slmlab.cli import main
from slmlab.config import ConfigError, config_from_dict


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
        ["eval", "RUN", "--batches", "0"],
        ["eval", "RUN", "--context-lengths", "abc"],
        ["eval", "RUN", "--context-lengths", "64,-1"],
        ["info", "CONFIG", "--batch-size", "-4"],
        ["train", "CONFIG", "--out_dir", "A_FILE"],
        ["train", "CONFIG", "--nproc", "0"],
        ["sweep", "SWEEP", "--jobs", "0"],
        ["train", "CONFIG", "--train.device", "meta"],
        ["train", "CONFIG", "--train.device", "cpu:1"],
        ["train", "CONFIG", "--train.device", "xpu"],
    ],
)
def test_a_bad_argument_is_one_line_and_nothing_is_written(argv, micro_toml, tmp_path, capsys):
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


def _exit_code(argv: list[str]) -> int:
    """main's return code, or the code argparse exits with."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_a_curriculum_with_a_bad_later_phase_fails_before_the_first_phase_trains(micro_toml, tmp_path, capsys):
    config = tmp_path / "curriculum.toml"
    config.write_text(
        micro_toml.read_text() + '\n[[phases]]\nname = "A"\nsteps = 4\n[[phases]]\nname = "B"\nsteps = 4\n'
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
