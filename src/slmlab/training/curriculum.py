"""Curricula: a run whose config holds [[phases]] trains them in order, each a sub-run.

    runs/<name>/config.json                 the whole curriculum config
    runs/<name>/phase1_<A>/ ...             an ordinary run directory per phase
    runs/<name>/summary.json                the last phase's summary plus one entry per phase

Phase i + 1 starts from phase i's final weights and tokenizer (optimizer fresh, or carried with
`carry_optimizer`). Resuming skips finished phases (writing a finished phase's damaged final
weights again from its last checkpoint) and continues an interrupted one from its checkpoint.
Each phase's model is checked to run the attention pattern its config asks for (the
seed's notebook switched a flag on a built model and silently kept full attention).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..config import ConfigError, RunConfig, check_config
from ..data.corpora import CorpusError
from ..data.sampling import check_windows
from ..files import atomic_write_text, json_text
from ..model.protocol import attention_modules
from ..registry import ATTENTION_PATTERNS
from ..runs.run_dir import RunDir, final_weights_intact
from .callbacks import TrainingCallback, checked_callbacks
from .distributed import World
from .results import TrainResult
from .resume import check_same_data, record_resumed, relocated
from .trainer import Trainer, prepare_data


def assert_patterns(trainer: Trainer) -> None:
    """Every attention module of the model (whatever the architecture) runs the pattern its
    layer's config asks for."""
    cfg = trainer.cfg.model
    for name, attention in attention_modules(trainer.model):
        wanted = ATTENTION_PATTERNS[cfg.layer_pattern(attention.layer)]
        if type(attention.pattern) is not wanted:
            raise ConfigError(
                f"{trainer.cfg.name}: {name} runs {type(attention.pattern).__name__}, config asks for {wanted.__name__}"
            )


def train_curriculum(
    cfg: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    callbacks: Iterable[TrainingCallback] = (),
) -> TrainResult:
    """Each phase in turn, a run of its own under the curriculum's directory, started from the
    previous phase's final weights; `callbacks` watch every phase (closed as each ends)."""
    check_config(cfg)
    callbacks = checked_callbacks(callbacks)
    root = RunDir.for_config(cfg)
    world, _ = World.from_env(cfg.train.device)
    lock = root.lock() if world.is_main else None
    try:
        return _train_phases(cfg, root, world, resume, overwrite, progress, callbacks)
    finally:
        if lock is not None:
            lock.release()


def check_phases(cfg: RunConfig, world: World, progress: bool = True) -> list[dict]:
    """Every phase's data gives the windows it asks for (known streams, long enough streams and
    validation split), checked before the first phase trains rather than when its turn comes ->
    each phase's token manifest."""
    tokenizer, manifests = None, []
    for index in range(len(cfg.phases)):
        sub = cfg.phase(index)
        tokenizer, data = prepare_data(sub.data, tokenizer, world, progress)
        try:
            check_windows(data.train, data.val, sub.data.seq_len, sub.train.batch_size, sub.data.mixture)
        except CorpusError as err:
            raise CorpusError(f"phases[{index}] ({cfg.phases[index].name}): {err}") from None
        manifests.append(data.manifest)
    return manifests


def relocate_finished(cfg: RunConfig, manifests: list[dict], world: World) -> None:
    """A resume that reads the data from another place (resume.DATA_LOCATION): each finished
    phase's token streams are checked against its summary and its config records the new place
    (the phase under way is checked and recorded by its Trainer)."""
    for index, manifest in enumerate(manifests):
        run = RunDir.for_config(sub := cfg.phase(index))
        if not run.summary.is_file():
            continue
        recorded = run.read_config()
        if relocated(recorded, sub):
            check_same_data(run, recorded, run.read_summary().get("data_sha256"), manifest, sub)
            if world.is_main:
                record_resumed(run, recorded, sub)


def relocate_root(cfg: RunConfig, root: RunDir, world: World) -> None:
    """The curriculum's config records the data's new place once a phase has checked it."""
    if world.is_main and relocated(recorded := root.read_config(), cfg):
        record_resumed(root, recorded, cfg)


def _train_phases(
    cfg: RunConfig, root: RunDir, world: World, resume: bool, overwrite: bool, progress: bool, callbacks: list[TrainingCallback]
) -> TrainResult:
    manifests = check_phases(cfg, world, progress)
    if resume:
        relocate_finished(cfg, manifests, world)
    else:
        root.ensure_free(overwrite)
        world.barrier()
        if world.is_main:
            root.create(cfg, overwrite)
        world.barrier()
    previous: RunDir | None = None
    phases, result = [], None
    for index, phase in enumerate(cfg.phases):
        sub = cfg.phase(index)
        run = RunDir.for_config(sub)
        resumable = (run.checkpoints / "latest").is_file()
        if not run.summary.is_file() or (resumable and not final_weights_intact(run, run.read_summary())):
            with Trainer(
                sub,
                resume=resumable,
                overwrite=True,
                progress=progress,
                init_from=None if resumable else previous,
                carry_optimizer=phase.carry_optimizer,
                callbacks=callbacks,
            ) as trainer:
                assert_patterns(trainer)
                relocate_root(cfg, root, world)
                result = trainer.fit()
        phases.append({"phase": phase.name, "run": str(run.path), **run.read_summary()})
        previous = run
    relocate_root(cfg, root, world)
    summary = {**{k: v for k, v in phases[-1].items() if k not in ("phase", "run")}, "phases": phases}
    if world.is_main and root.read_summary() != summary:  # a finished curriculum resumed: nothing changes
        atomic_write_text(root.summary, json_text(summary, indent=2) + "\n")
    return result or TrainResult.from_summary(root.path, phases[-1])
