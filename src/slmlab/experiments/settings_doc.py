"""docs/settings.md: every setting of a run config and of a sweep config, with its type, default
and meaning (config/reference.py builds the tables from the dataclasses' field comments). A test
checks that the file is current; regenerate it with

    python -m slmlab.experiments.settings_doc > docs/settings.md
"""

from __future__ import annotations

from ..config.reference import reference_sections, run_config_parts
from .budget import Budget
from .sweep_config import HarnessTasks, SweepConfig
from .tuning import Tune

HEADER = """# Settings

Every setting of a run config and of a sweep config, with its type, default and meaning. A config
is a TOML file; any run setting is overridden on the command line by its dotted key
(`--model.n_layer 6`). Generated from the config dataclasses by
`python -m slmlab.experiments.settings_doc > docs/settings.md` (a test checks that this file is
current). A plugin's section is documented by its own file.

# Run configs (`slmlab train CONFIG`)
"""

SWEEP = """# Sweep configs (`slmlab sweep CONFIG`)

A sweep config names a base run config and the variants to compare; [verdicts.md](verdicts.md)
explains the budget, the tuning and the statistics.
"""


def settings_document() -> str:
    """The text of docs/settings.md."""
    sweep_parts = [
        ("The top level", SweepConfig, ""),
        ("[budget]", Budget, "budget."),
        ("[tune]", Tune, "tune."),
        ("[lm_eval]", HarnessTasks, "lm_eval."),
    ]
    return "\n".join([HEADER, *reference_sections(run_config_parts()), SWEEP, *reference_sections(sweep_parts)])


if __name__ == "__main__":
    print(settings_document(), end="")
