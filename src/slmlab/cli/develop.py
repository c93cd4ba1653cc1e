"""Verbs for developing an idea: `check` (the conformance suite) and `new-variant` (a plugin
skeleton that passes it)."""

from __future__ import annotations

import sys

from ..tables import command_line, counted
from .argument_types import output_folder
from .options import add_seed, add_verb, configs_to_inspect

KINDS = ("attention-extension", "output-gate", "mlp")  # analysis/scaffold.KIND_TEMPLATES (not imported: --help stays light)


def register(sub) -> None:
    p = add_verb(
        sub,
        "check",
        "conformance suite of the model a config builds, at tiny shapes: causality, batch independence, "
        "KV cache, left-padded decoding, gradients, determinism, save/load, initial loss, overfitting, naive references",
        "  slmlab check configs/quickstart.toml\n"
        "  slmlab check configs/smat_quick.toml --model.smat.use_S true\n"
        "  slmlab check examples/plugins/gated_attention.toml\n"
        "  slmlab check configs/smat_quick.toml --device cuda",
        overrides=True,
        reads_runs=False,
    )
    p.add_argument("config")
    add_seed(p, help="seed of the tiny model and its inputs")
    p.add_argument(
        "--device",
        default="cpu",
        help="where the tiny model runs, in float64 (default cpu; cuda, cuda:N or mps check that device's kernels)",
    )
    p.set_defaults(func=cmd_check)

    p = add_verb(
        sub,
        "new-variant",
        "write a documented plugin skeleton (module, config section, intervention, naive reference for the attention "
        "kinds, run and sweep configs) that passes `slmlab check` as generated",
        "  slmlab new-variant head_temperature --out ideas\n"
        "  slmlab new-variant relu2 --kind mlp --out ideas\n"
        "  slmlab check ideas/head_temperature.toml\n"
        "  slmlab sweep ideas/head_temperature_sweep.toml --jobs 2",
        reads_runs=False,
    )
    p.add_argument("name", help="a Python identifier: the plugin's file, section and config names")
    p.add_argument("--kind", choices=KINDS, default=KINDS[0], help="extension point (default %(default)s)")
    p.add_argument("--out", default="ideas", type=output_folder, help="folder to write into (default %(default)s)")
    p.add_argument("--force", action="store_true", help="replace files of the same names")
    p.set_defaults(func=cmd_new_variant)


FLEX_NOTE = (
    "; block-local through the windows kernel (model.local_kernel = 'flex' computes the same pattern, "
    "and FlexAttention has no backward on CPU)"
)


def cmd_check(args, extra) -> int:
    """A run config: its model (a curriculum: each phase's); a sweep config: every variant's
    model (at its first seed)."""
    from ..analysis.conformance import comparison_table, outcome_table, run_checks
    from ..analysis.tiny_models import models_to_check, shrunk_sections
    from ..training.kernel_choice import forces_flex
    from ..training.runtime import resolve_device

    device = resolve_device(args.device)
    given = configs_to_inspect(args.config, extra)
    configs = {label: cfg for name, run_cfg in given.items() for label, cfg in models_to_check(name, run_cfg).items()}
    results = {}
    for label, cfg in configs.items():
        model_cfg, results[label] = run_checks(cfg, args.seed, device)
        print(
            f"{label}: {model_cfg.arch}, {counted(model_cfg.n_layer, 'layers')} x {model_cfg.d_model} d_model, vocab {model_cfg.vocab_size}"
            + shrunk_sections(cfg.model, model_cfg)
            + (FLEX_NOTE if forces_flex(cfg.model) else "")
        )
    print(outcome_table(results[label]) if len(results) == 1 else comparison_table(results))
    failed = [(label, o) for label, outcomes in results.items() for o in outcomes if o.result.passed is False]
    for label, outcome in failed:
        print(f"FAIL {outcome.name}{f' [{label}]' if len(results) > 1 else ''}: {outcome.result.reason}", file=sys.stderr)
    total = sum(len(outcomes) for outcomes in results.values())
    print(f"{total - len(failed)}/{total} properties hold" + (f"; {len(failed)} fail" if failed else ""))
    return 1 if failed else 0


def cmd_new_variant(args, extra) -> int:
    from ..analysis.scaffold import write_variant

    for path in write_variant(args.name, args.kind, args.out, args.force):
        print(f"wrote {path}")
    print(f"next: {command_line('slmlab', 'check', f'{args.out}/{args.name}.toml')}")
    return 0
