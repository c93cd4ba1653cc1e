"""Reading a run at one of its checkpoints (`--checkpoint step_NNNNNN` on eval, generate and the
viz readouts): the model is that checkpoint's weights, files go apart from the final weights'
(RUN/viz/<checkpoint>/), and what cannot honour it says so in one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from slmlab.cli import main
from slmlab.evals.score import score_run
from slmlab.model import build_model
from slmlab.runs.run_dir import load_run

CHECKPOINT = "step_000006"


@pytest.fixture
def run(micro_toml, tmp_path, capsys):
    """A 12-step run with a checkpoint at step 6 (and the final one at 12)."""
    assert main(["train", str(micro_toml), "--no-progress", "--name", "r"]) == 0
    capsys.readouterr()
    return tmp_path / "runs" / "r"


def _checkpoint_model(run):
    """Naive reference: the run's model built afresh and given the checkpoint file's tensors."""
    cfg, final, tokenizer = load_run(run)
    model = build_model(cfg.model)
    model.load_state_dict(load_file(run / "checkpoints" / f"{CHECKPOINT}.safetensors"), strict=False)
    return cfg, model.eval(), final, tokenizer


def test_eval_and_generate_read_the_named_checkpoint(run, capsys):
    cfg, reference, final, tokenizer = _checkpoint_model(run)
    _, loaded, _ = load_run(run, checkpoint=CHECKPOINT)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), final.state_dict().values()))

    assert main(["eval", str(run), "--checkpoint", CHECKPOINT, "--batches", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = score_run(run, cfg, reference, tokenizer, torch.device("cpu"), "val", 2)
    assert result["checkpoint"] == CHECKPOINT and result["loss"] == pytest.approx(expected["loss"], abs=1e-6)
    assert main(["eval", str(run), "--checkpoint", CHECKPOINT, "--batches", "2"]) == 0
    assert f"val at {CHECKPOINT}," in capsys.readouterr().out

    assert (
        main(["generate", str(run), "--checkpoint", CHECKPOINT, "--prompt", "T", "--temperature", "0", "--max-new-tokens", "8"])
        == 0
    )
    greedy = reference.generate(torch.tensor([tokenizer.encode("T")]), 8, temperature=0.0)[0].tolist()
    assert capsys.readouterr().out.strip() == tokenizer.decode(greedy).strip()


def test_a_checkpoint_is_named_by_its_step_alone_too(run, capsys, caplog):
    """`--checkpoint STEP` read "6" as a name and refused it, listing step_000006."""
    assert main(["eval", str(run), "--checkpoint", CHECKPOINT, "--batches", "2", "--json"]) == 0
    by_name = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run), "--checkpoint", "6", "--batches", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == by_name  # "checkpoint": "step_000006" too
    assert main(["viz", "lens", str(run), "--checkpoint", "000006", "--prompt", "The"]) == 0
    assert (run / "viz" / CHECKPOINT / "lens.png").is_file()
    caplog.set_level("INFO", logger="slmlab")
    assert main(["train", "--resume", str(run), "--from-checkpoint", "6", "--no-progress"]) == 0
    assert f"resumed {run} at step 6" in caplog.text


def test_load_run_in_python_takes_a_checkpoints_step_as_the_command_line_does(run):
    """load_run(run, checkpoint=6) failed deep inside with 'expected string or bytes-like object,
    got int'; the step alone, as a number or its digits, is the checkpoint, as on the command line."""
    from slmlab.errors import CheckpointError

    named = load_run(run, checkpoint=CHECKPOINT)[1].state_dict()
    for step in (6, "6"):
        loaded = load_run(run, checkpoint=step)[1].state_dict()
        assert all(torch.equal(named[key], loaded[key]) for key in named)
    for wrong, says in [
        (6.0, "name a checkpoint as step_000200 or by its step \\(200\\), not 6.0"),
        (7, "no checkpoint 'step_000007'"),
    ]:
        with pytest.raises(CheckpointError, match=says):
            load_run(run, checkpoint=wrong)


def test_a_readout_of_a_checkpoint_is_written_apart_and_recorded_with_its_weights(run, capsys):
    from slmlab.runs.derived import weights_identity

    assert main(["viz", "lens", str(run), "--checkpoint", CHECKPOINT, "--prompt", "The"]) == 0
    assert (run / "viz" / CHECKPOINT / "lens.png").is_file() and not (run / "viz" / "lens.png").exists()
    record = json.loads((run / "derived.json").read_text())["files"][f"viz/{CHECKPOINT}/lens.png"]
    assert record["weights"] == weights_identity(run, CHECKPOINT) != weights_identity(run)
    assert f"--checkpoint {CHECKPOINT}" in record["command"]
    assert main(["viz", "attention", str(run), "--checkpoint", CHECKPOINT, "--prompt", "The"]) == 0
    assert (run / "viz" / CHECKPOINT / "attention_text.png").is_file()
    assert main(["report", str(run)]) == 0
    assert "Out of date" not in (run / "report.md").read_text()  # the final weights' report shows none of them


@pytest.mark.parametrize(
    "argv, says",
    [
        (["eval", "RUN", "--checkpoint", "step_000009"], "no checkpoint 'step_000009' in "),
        (["eval", "RUN", "--checkpoint", "9"], "no checkpoint 'step_000009' in "),
        (["eval", "RUN", "--checkpoint", "-6"], "checkpoints there: step_000012, step_000006"),
        (["eval", "RUN", "--checkpoint", CHECKPOINT, "--int8"], "--checkpoint and --int8 do not go together"),
        (["eval", "RUN", "--checkpoint", CHECKPOINT, "--by-position"], "--checkpoint and --by-position do not go together"),
        (
            ["generate", "RUN", "--checkpoint", CHECKPOINT, "--int8", "--prompt", "T"],
            "--checkpoint and --int8 do not go together",
        ),
        (["viz", "lens", "RUN", "--checkpoint", "step_x", "--prompt", "T"], "no checkpoint 'step_x'"),
    ],
)
def test_a_checkpoint_that_cannot_be_read_is_one_line(run, capsys, argv, says):
    assert main([str(run) if a == "RUN" else a for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err


def test_a_finished_run_without_its_final_weights_names_the_checkpoint_to_read_instead(run, capsys):
    (run / "final.safetensors").unlink()
    assert main(["generate", str(run), "--prompt", "T", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "final.safetensors is missing" in err and "(--checkpoint step_000012)" in err and "\n" not in err
    assert main(["generate", str(run), "--prompt", "T", "--max-new-tokens", "2", "--checkpoint", "step_000012"]) == 0
