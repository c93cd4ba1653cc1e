"""Curricula: phases hand weights on, each runs the pattern it asks for, and resume is exact."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from slmlab.config import ConfigError, config_from_dict
from slmlab.model.block_local import BlockLocal
from slmlab.runs.run_dir import RunDir, load_run, with_token_offsets
from slmlab.training import Trainer, train


def curriculum(make_config, text_corpus, name="cur"):
    cfg = make_config(
        text_corpus, model={"pos": "rope", "local_block": 8}, train={"steps": 10, "checkpoint_every": 4, "eval_every": 5}
    )
    values = cfg.to_dict()
    values["name"] = name
    values["phases"] = [
        {"name": "A", "steps": 8, "seq_len": 16},
        {"name": "B", "steps": 8, "seq_len": 32, "attention": "block_local", "rope_scale": 2.0, "lr": 1e-3},
        {"name": "C", "steps": 6, "mixture": {"prose": 3.0, "verse": 1.0}, "carry_optimizer": True},
    ]
    return config_from_dict(values)


def test_phases_hand_weights_on_and_run_their_own_settings(make_config, text_corpus):
    cfg = curriculum(make_config, text_corpus)
    root = RunDir.for_config(cfg)
    root.create(cfg)
    phase_a = cfg.phase(0)
    Trainer(phase_a, overwrite=True, progress=False).fit()
    first = RunDir.for_config(phase_a)
    phase_b = Trainer(cfg.phase(1), overwrite=True, progress=False, init_from=first)
    start = {k: v.cpu() for k, v in phase_b.model.state_dict().items()}
    final_a = load_file(first.final_weights)
    assert all(torch.equal(start[k], final_a[k]) for k in final_a)
    assert all(isinstance(b.attn.pattern, BlockLocal) for b in phase_b.model.blocks)
    assert phase_b.model.positions.scale == 2.0 and phase_b.cfg.data.seq_len == 32
    phase_c = cfg.phase(2)  # keeps what B set, changes only the mixture
    assert (phase_c.model.attention, phase_c.model.rope_scale, phase_c.data.seq_len, phase_c.train.lr) == (
        "block_local",
        2.0,
        32,
        1e-3,
    )
    assert phase_c.data.mixture == {"prose": 3.0, "verse": 1.0} and phase_c.train.steps == 6


def interrupt_in_phase_b(cfg) -> None:
    """Train the curriculum until phase B's step 4, where the process is interrupted."""
    original_fit = Trainer.fit

    def crash_in_phase_b(self):
        if self.cfg.name.startswith("phase2"):
            real = self.sampler.next_batch
            self.sampler.next_batch = lambda: (_ for _ in ()).throw(KeyboardInterrupt) if self.step == 4 else real()
        return original_fit(self)

    Trainer.fit = crash_in_phase_b
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, progress=False)
    finally:
        Trainer.fit = original_fit


def test_curriculum_end_to_end_and_exact_resume(make_config, text_corpus):
    straight = curriculum(make_config, text_corpus, "straight")
    train(straight, progress=False)
    summary = RunDir.for_config(straight).read_summary()
    assert [p["phase"] for p in summary["phases"]] == ["A", "B", "C"] and summary["step"] == 6

    interrupted = curriculum(make_config, text_corpus, "interrupted")
    interrupt_in_phase_b(interrupted)
    root = RunDir.for_config(interrupted).path
    assert (root / "phase1_A" / "summary.json").is_file() and not (root / "phase2_B" / "summary.json").exists()
    train(interrupted, resume=True, progress=False)
    a = load_file(RunDir.for_config(straight).path / "phase3_C" / "final.safetensors")
    b = load_file(root / "phase3_C" / "final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg, model, _ = load_run(root)  # a curriculum run loads as its last phase
    assert cfg.name == "phase3_C" and isinstance(model.blocks[0].attn.pattern, BlockLocal)
    from slmlab.analysis.info import config_for_info, size_table

    info = size_table(config_for_info(root, None))  # its config.json has no vocabulary: info failed on it
    assert info.count("phase ") == 3 and "block_local attention (block 8)" in info.split("phase B")[1]
    for phase in ("phase1_A", "phase3_C"):  # a resume of the finished curriculum left damaged final weights so
        (root / phase / "final.safetensors").write_bytes(b"damaged")
    train(interrupted, resume=True, progress=False)
    again = load_file(root / "phase3_C" / "final.safetensors")
    assert all(torch.equal(a[k], again[k]) for k in a) and load_run(root / "phase1_A")


def test_a_phase_a_later_phase_began_from_keeps_its_end(make_config, text_corpus):
    """Resuming phase A's own directory to more steps, or from an older checkpoint, once phase B
    had begun from A's end, trained A on in silence: B and C descended from an end A no longer
    had, and the curriculum, resumed, never trained them again."""
    from dataclasses import replace

    cfg = curriculum(make_config, text_corpus, "branched")
    interrupt_in_phase_b(cfg)
    phase_a = cfg.phase(0)
    a = RunDir.for_config(phase_a)
    before = a.final_weights.read_bytes()
    longer = replace(phase_a, train=replace(phase_a.train, steps=12))
    for settings, step in (({"cfg": longer}, 8), ({"cfg": phase_a, "from_checkpoint": "step_000004"}, 4)):
        with pytest.raises(
            ConfigError,
            match=f"is phase 1 of the curriculum .*, and phase2_B began from its end: training it on from step {step}",
        ):
            train(settings.pop("cfg"), resume=True, progress=False, **settings)
    assert a.final_weights.read_bytes() == before and a.read_summary()["step"] == 8
    train(phase_a, resume=True, progress=False)  # finished: changes nothing
    train(cfg, resume=True, progress=False)  # the curriculum itself finishes B and C
    assert RunDir.for_config(cfg.phase(2)).read_summary()["step"] == 6


def test_extending_the_last_phase_makes_the_curriculum_unfinished_until_it_ends(make_config, text_corpus):
    """Phase C extended through its own directory and killed on the way left the curriculum's
    summary.json, which `report` and a sweep read as the curriculum's end, at C's old end."""
    from dataclasses import replace

    from tests.conftest import kill_after_step

    cfg = curriculum(make_config, text_corpus, "extended")
    train(cfg, progress=False)
    root, phase_c = RunDir.for_config(cfg), cfg.phase(2)
    assert root.read_summary()["step"] == 6
    kill_after_step(Trainer(replace(phase_c, train=replace(phase_c.train, steps=12)), resume=True, progress=False), 8)
    assert not root.summary.exists() and not RunDir.for_config(phase_c).summary.exists()
    train(replace(phase_c, train=replace(phase_c.train, steps=12)), resume=True, progress=False)
    train(cfg, resume=True, progress=False)  # the curriculum writes its summary again, from the phases as they are
    assert root.read_summary()["step"] == 12 and root.read_summary()["phases"][-1]["step"] == 12


def test_a_curriculum_whose_corpus_moved_resumes_and_records_where_it_lies(make_config, text_corpus, tmp_path):
    """A finished phase's token streams are checked against its summary, the interrupted phase's
    against its checkpoint; every phase's config and the curriculum's record the new place."""
    import json

    cfg = curriculum(make_config, text_corpus, "moving")
    interrupt_in_phase_b(cfg)
    root = RunDir.for_config(cfg).path
    moved = text_corpus.rename(tmp_path / "moved")
    values = json.loads((root / "config.json").read_text())
    values["data"]["source"] = str(moved)
    train(config_from_dict(values), resume=True, progress=False)
    for config in (root / "config.json", *(root / f"phase{i}_{n}" / "config.json" for i, n in ((1, "A"), (2, "B"), (3, "C")))):
        assert json.loads(config.read_text())["data"]["source"] == str(moved), config
    straight = curriculum(make_config, moved, "straight")
    train(straight, progress=False)
    a = load_file(RunDir.for_config(straight).path / "phase3_C" / "final.safetensors")
    b = load_file(root / "phase3_C" / "final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_invalid_phase_is_a_clear_error(make_config, text_corpus):
    """Said of the phase, with where to change it: the rule's own advice ("lower data.seq_len")
    names a setting the phase replaces, and giving it is refused as ignored."""
    values = make_config(text_corpus).to_dict()
    values["phases"] = [{"name": "A", "seq_len": 4096}]
    hint = "(phase A sets seq_len: change phases.A.seq_len)"
    with pytest.raises(ConfigError, match="phases\\[0\\] \\(A\\): data.seq_len = 4096 exceeds model.block_size = 64") as err:
        config_from_dict(values)
    assert str(err.value).endswith(hint)
    values["data"]["seq_len"] = 4096  # the run's own value breaks the rule too, as the phase sets it
    with pytest.raises(ConfigError, match="^phases\\[0\\] \\(A\\): data.seq_len = 4096") as err:
        config_from_dict(values)
    assert str(err.value).endswith(hint)
    values["phases"] = [{"name": "A", "steps": 3}, {"name": "B", "steps": 2, "lr": 0.5}, {"name": "C", "seq_len": 4096}]
    with pytest.raises(ConfigError, match="^data.seq_len = 4096 exceeds model.block_size = 64; lower data.seq_len or raise"):
        config_from_dict(values)  # phase A leaves data.seq_len as the run sets it: the run's own error


def test_a_phase_is_set_from_the_command_line_or_a_sweep_by_its_name_or_index(make_config, text_corpus, tmp_path):
    """`--phases.B.seq_len 32` (or `phases.1.seq_len`, a table `phases.B = {...}`): a curriculum was
    shrunk for a quick trial only by copying its TOML, since --train.steps is read by no phase."""
    from slmlab.config import apply_overrides, load_config

    values = curriculum(make_config, text_corpus).to_dict()
    shrunk = config_from_dict(
        apply_overrides(values, {"phases.B.seq_len": 16, "phases.0.steps": 3, "phases.C": {"steps": 1, "lr": 0.01}})
    )
    assert [(p.train.steps, p.data.seq_len) for p in shrunk.phase_configs()] == [(3, 16), (8, 16), (1, 16)]
    assert shrunk.phase_configs()[2].train.lr == 0.01 and shrunk.phases[2].carry_optimizer  # the table kept its other fields
    assert values["phases"][0]["steps"] == 8  # the caller's values are not changed
    path = tmp_path / "cur.toml"
    path.write_text(
        '[model]\nblock_size = 64\n[data]\nseq_len = 16\n[[phases]]\nname = "A"\nsteps = 5\n[[phases]]\nname = "B"\nsteps = 4\n'
    )
    assert [p.train.steps for p in load_config(path, ["--phases.B.steps", "2"]).phase_configs()] == [5, 2]
    for overrides, message in [
        (
            {"phases.D.steps": 1},
            "cannot set 'phases.D.steps': no phase 'D' \\(the phases: A, B, C; by name or by index, 0 to 2\\)",
        ),
        ({"phases.3.steps": 1}, "no phase '3'"),
        ({"phases.A": 5}, "cannot set 'phases.A': name a setting of that phase, e.g. --phases.A.steps 100"),
        ({"phases.A.stepz": 5}, "unknown config key 'phases\\[0\\].stepz' \\(did you mean 'phases\\[0\\].steps'\\?\\)"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict(apply_overrides(values, overrides))
    with pytest.raises(ConfigError, match="cannot set 'phases.A.steps': the config has no \\[\\[phases\\]\\]"):
        apply_overrides(make_config(text_corpus).to_dict(), {"phases.A.steps": 1})


def test_a_value_the_first_phase_replaces_is_not_held_against_the_curriculum(make_config, text_corpus):
    """A block_size of 64 with the first phase training on 16-token windows: the run's default
    data.seq_len (256) is read by no phase. It was refused as exceeding the context, and giving
    data.seq_len was refused as ignored, so no such curriculum could be written without knowing
    to repeat the phase's value. It trains, and `diagnose` runs its first phase."""
    from slmlab.evals.diagnose import diagnose

    values = make_config(text_corpus, train={"steps": 3, "eval_every": 3, "checkpoint_every": 0}).to_dict()
    values["data"].pop("seq_len")
    values["phases"] = [{"name": "A", "steps": 3, "seq_len": 16}, {"name": "B", "steps": 2, "seq_len": 64}]
    cfg = config_from_dict(values)
    assert cfg.data.seq_len == 256 > cfg.model.block_size and [p.data.seq_len for p in cfg.phase_configs()] == [16, 64]
    assert train(cfg, progress=False).step == 2
    assert diagnose(cfg, max_steps=2, progress=False).init_ok
    values["model"]["n_head"] = 3  # a rule the first phase does not touch is still the config's own error
    with pytest.raises(ConfigError, match="^model.d_model = 32 is not divisible by model.n_head = 3$"):
        config_from_dict(values)


@pytest.mark.parametrize(
    "names, message",
    [
        (["A", ""], "phases\\[1\\].name is empty: name the phase"),  # a sub-run named 'phase2_'
        (["A", " "], "phases\\[1\\].name is empty"),
        (["A", "B", "A"], "phases\\[0\\] and phases\\[2\\] are both named 'A'"),  # two rows 'A' in every report
    ],
)
def test_phases_need_names_of_their_own(make_config, text_corpus, names, message):
    values = make_config(text_corpus).to_dict()
    values["phases"] = [{"name": name, "steps": 2} for name in names]
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_an_unfinished_curriculum_is_read_at_its_latest_phase(make_config, text_corpus, tmp_path, capsys):
    """Stopped before phase C began: eval, generate and report failed with 'phase3_C is not a run
    directory'. They now read the latest phase that began (and say so); persona, which starts from
    a finished model, says the curriculum is unfinished; one that never began says that."""
    import shutil

    from slmlab.analysis.report import write_report
    from slmlab.cli import main
    from slmlab.persona.stage2 import trained_config

    cfg = curriculum(make_config, text_corpus, "stopped")
    train(cfg, progress=False)
    root = RunDir.for_config(cfg).path
    shutil.rmtree(root / "phase3_C")
    (root / "summary.json").unlink()
    loaded, model, _ = load_run(root)
    assert loaded.name == "phase2_B" and isinstance(model.blocks[0].attn.pattern, BlockLocal)
    assert main(["eval", str(root), "--batches", "1"]) == 0
    assert main(["generate", str(root), "--prompt", "ROMEO", "--max-new-tokens", "3"]) == 0
    write_report(root)
    assert "block_local attention" in (root / "report.md").read_text()
    with pytest.raises(ConfigError, match="has not finished its curriculum \\(phase C has not begun\\)"):
        trained_config(RunDir(root))
    for phase in ("phase1_A", "phase2_B"):
        shutil.rmtree(root / phase)
    with pytest.raises(ConfigError, match="has not started training"):
        load_run(root)


def test_resuming_a_curriculum_with_steps_its_phases_replace_is_refused(make_config, text_corpus, capsys):
    """`train --resume CURRICULUM --train.steps 100` finished at once and trained nothing: the
    phases train their own steps. It is refused, naming the phase folder that can train on."""
    from slmlab.cli import main

    cfg = curriculum(make_config, text_corpus)
    cfg.phases = cfg.phases[:1]
    train(cfg, progress=False)
    root = RunDir.for_config(cfg).path
    assert main(["train", "--resume", str(root), "--train.steps", "100", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "train.steps = 100 is ignored: the curriculum's first phase (A) sets steps = 8" in err
    assert f"resume its own folder ({root / 'phase1_A'})" in err and err.count("\n") == 1
    for key in ("--phases.A.steps", "--phases.0.steps"):  # a phase's settings stay as trained, but it can train longer
        assert main(["train", "--resume", str(root), key, "100", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert (
            f"not ['{key[2:]}']; to train phase A longer, resume its own folder: slmlab train --resume {root / 'phase1_A'} "
            in err
        )


def test_a_curriculum_run_counts_the_steps_tokens_flops_failures_speed_and_memory_of_every_phase():
    """A curriculum's summary is its last phase's, with every phase's under "phases": the table
    showed phase B's 10 steps and 1.28K tokens for a run that trained 30 steps and 2.56K tokens."""
    from slmlab.config import config_from_dict
    from slmlab.experiments.budget import flops_per_token
    from slmlab.experiments.results import summarize, train_flops
    from slmlab.experiments.sweep_config import SweepConfig

    config = config_from_dict(
        {
            "model": {"n_layer": 1, "n_head": 2, "d_model": 16, "block_size": 64, "vocab_size": 30},
            "data": {"seq_len": 16},
            "phases": [{"name": "A", "steps": 20}, {"name": "B", "steps": 10, "seq_len": 32}],
        }
    )
    done = {"val_ppl": 9.0, "val_bpb": 3.0, "step": 10, "tokens": 1280, "tokens_per_s": 1e4, "peak_memory_bytes": 1e8}
    phases = [
        {"step": 20, "tokens": 1280, "tokens_per_s": 2.5e3, "peak_memory_bytes": 3e8, "nan_skips": 2},
        {**done, "nan_skips": 1},
    ]
    sweep = SweepConfig(name="s", base="b.toml", seeds=[0], variants={"base": {}}, baseline="base")
    summary = {**done, "nan_skips": 1, "params": 9920, "phases": phases}
    (record,) = summarize(sweep, {("base", 0): summary})
    assert (record["steps"], record["tokens"]) == (30, 2560)
    # the failures, speed and memory of every phase: they were the last phase's alone (1 skip, 1e4 tokens/s, 1e8 B)
    assert (record["nan_skips"], record["tokens_per_s"], record["peak_memory_bytes"]) == (
        3,
        2560 / (1280 / 2.5e3 + 1280 / 1e4),
        3e8,
    )
    short, long = (flops_per_token(phase) for phase in config.phase_configs())
    assert short < long and train_flops(config, [summary]) == 1280 * short + 1280 * long


def test_a_phase_setting_is_a_setting_of_its_own_in_reports_and_comparisons(make_config, text_corpus):
    """A sweep variant changing phase B's attention was "nothing (a replicate)" in the sweep's
    report: the phases were left out of the settings compared."""
    from slmlab.analysis.report import changed_settings
    from slmlab.config import RunConfig, apply_overrides

    cfg = curriculum(make_config, text_corpus)
    other = config_from_dict(apply_overrides(cfg.to_dict(), {"phases.B.attention": "full"}))
    assert changed_settings(other, cfg) == [("phases.B.attention", '"full"', '"block_local"')]  # as TOML writes them
    listed = {key for key, _, _ in changed_settings(cfg, RunConfig())}  # against the defaults: what the phases set
    assert {"phases.B.seq_len", "phases.C.carry_optimizer"} <= listed and "phases.A.carry_optimizer" not in listed


def test_a_sweep_of_curricula_plans_draws_reports_and_resumes_every_phase(tmp_path, micro_toml, capsys, monkeypatch):
    """A sweep whose base is a curriculum: --dry-run said "12 steps" (the run's own train.steps,
    read by no phase), curves.png drew nothing (the metrics lie in the phases' folders, each
    counting its tokens from its start), `report SWEEP` failed on the curriculum's vocabulary, and
    a run stopped in a phase was trained again from scratch."""
    from slmlab.analysis.quantize import quantize_report
    from slmlab.analysis.report import write_report
    from slmlab.cli import main
    from slmlab.experiments import results, sweep_config
    from slmlab.experiments import sweep as sweep_module
    from slmlab.tables import human

    micro_toml.write_text(
        micro_toml.read_text().replace("\nsteps = 12\n", "\n").replace("\nseq_len = 32\n", "\n")
        + '[[phases]]\nname = "A"\nsteps = 4\nseq_len = 16\n[[phases]]\nname = "B"\nsteps = 6\nseq_len = 32\nlr = 1e-3\n'
    )
    sweep = tmp_path / "cur_sweep.toml"
    sweep.write_text(
        f'name = "cs"\nbase = "base.toml"\nout_dir = "{tmp_path / "runs"}"\nseeds = [0]\n'
        '[overrides]\n"phases.A.steps" = 3\n[variants.base]\n[variants.s]\n"model.smat.use_S" = true\n'
    )
    assert main(["sweep", str(sweep), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("9 steps: 3 + 6 in phases A, B") == 2
    twice = sweep.read_text().replace("[variants.s]\n", '[variants.s]\n"phases.B" = {lr = 1e-2}\n"phases.1.lr" = 3e-3\n')
    (tmp_path / "twice.toml").write_text(twice)
    with pytest.raises(ConfigError, match="variant 's' sets phases.B.lr twice \\(under two spellings\\)"):
        sweep_config.load_sweep(tmp_path / "twice.toml")  # a phase by its name and by its index: one of them was dropped
    drawn, planned = [], []
    monkeypatch.setattr(results, "loss_axis", lambda ax, values: drawn.append(values))
    monkeypatch.setattr(sweep_module, "runs_that_fit", lambda configs, slots: planned.extend(configs) or (slots, 1))
    assert main(["sweep", str(sweep), "--jobs", "2"]) == 0
    assert sorted(c.data.seq_len for c in planned) == [16, 16, 32, 32]  # the memory of every phase (A's windows are shorter)
    root = tmp_path / "runs" / "cs"
    evaluations = [
        r for phase in ("phase1_A", "phase2_B") for r in RunDir(root / "base_s0" / phase).read_metrics() if "val_loss" in r
    ]
    assert len(drawn[0]) == 2 * len(evaluations) > 2  # each variant's curve runs through both phases
    (_, offset, records), *_ = reversed(with_token_offsets([RunDir(root / "base_s0" / p) for p in ("phase1_A", "phase2_B")]))
    assert offset == 3 * 4 * 16 and records[0]["tokens"] <= 6 * 4 * 32  # phase B's tokens start after phase A's 3 steps
    write_report(root)
    assert "phase A (3 steps)" in (root / "report.md").read_text()
    table, _ = quantize_report(root / "base_s0", batches=1)  # the fp32 file is the last phase's (it read "0 B")
    assert f"| fp32  | {human((root / 'base_s0' / 'phase2_B' / 'final.safetensors').stat().st_size, 'B')} " in table
    stopped = root / "base_s0"  # stopped in phase B (its checkpoints lie in phase2_B): it was "new", trained afresh
    for path in (stopped / "summary.json", stopped / "phase2_B" / "summary.json", stopped / "phase2_B" / "final.safetensors"):
        path.unlink()
    kept = (stopped / "phase1_A" / "final.safetensors").stat().st_ino
    assert main(["sweep", str(sweep), "--dry-run"]) == 0
    assert f"{stopped}  [resume]" in capsys.readouterr().out
    assert main(["sweep", str(sweep)]) == 0
    assert (stopped / "phase1_A" / "final.safetensors").stat().st_ino == kept and (stopped / "summary.json").is_file()
