"""The errors slmlab reports to its user: one base class, one subclass per kind of mistake.

Library code raises these for anything the user can fix (a config key, a corpus, a tokenizer file,
a checkpoint, a diverging run); the CLI catches `SlmlabError` and prints its message as one line.
Anything else reaching the CLI is a bug in slmlab and keeps its traceback.
"""

from __future__ import annotations

import re


class SlmlabError(Exception):
    """A problem the user can fix, described in one line that says what to do."""


class ConfigError(SlmlabError, ValueError):
    """A configuration or command-line problem; the message names the key or option."""


class CorpusError(SlmlabError, RuntimeError):
    """A corpus is missing, empty or unreadable, or cannot give the windows asked for."""


class TokenizerError(SlmlabError, ValueError):
    """A tokenizer file or setting is unusable."""


class CheckpointError(SlmlabError, RuntimeError):
    """A checkpoint or weights file is missing, corrupt or does not fit the model."""


class TrainingError(SlmlabError, RuntimeError):
    """Training cannot go on (e.g. the loss keeps diverging); the message says what to try."""


class RunFileError(SlmlabError, RuntimeError):
    """A file of a run directory (metrics, summary, results) is damaged or of the wrong shape."""


class RunInUseError(SlmlabError, RuntimeError):
    """Another live process holds the run (or sweep) directory's lock."""


TRAINING_MEMORY_ADVICE = (  # a training run that does not fit: out_of_memory's, training/memory_room.py's
    "make the model, train.batch_size or the sequence length smaller, or raise train.grad_accum "
    "(`slmlab info CONFIG` estimates the memory a run needs)"
)
GENERATION_MEMORY_ADVICE = {  # a generation that does not fit, by the verb that ran it: each names its own options
    "generate": "generate fewer samples at once (--num-samples) or fewer tokens (--max-new-tokens)",
    "prompts": "give the suite's prompts a smaller max_tokens",
    "persona-eval": "generate fewer tokens (--max-new-tokens), or from fewer openings (--openings)",
    "lm-eval": "score fewer rows at once (--batch-size), or give a task that generates fewer tokens",
}
GENERATION_ELSEWHERE = "generate fewer sequences at once, or fewer tokens"  # a library call, or a verb not above
SCORING = {"eval", "ablate", "quantize", "viz", "info", "check", "report", "export"}
SCORING_MEMORY_ADVICE = "score fewer rows at once (--batch-size where the command has it) or use a larger machine"


def memory_advice(verb: str, generating: bool = False) -> str:
    """What to do when `verb` (the command that ran: "viz attention") runs out of memory, naming
    its own options; `generating`: the memory went to generated sequences (model/decoding_room)."""
    command = verb.split()[0] if verb else ""
    if generating or command in GENERATION_MEMORY_ADVICE:
        return GENERATION_MEMORY_ADVICE.get(command, GENERATION_ELSEWHERE)
    return SCORING_MEMORY_ADVICE if command in SCORING else TRAINING_MEMORY_ADVICE


class GenerationRoomError(ConfigError):
    """A generation that cannot fit in this machine's memory, refused before it starts:
    `need` says what it needs; the advice that follows names the options of the verb that ran it
    (`for_verb`; the CLI's), or none in particular (str, as a library call sees it)."""

    def __init__(self, need: str):
        self.need = need
        super().__init__(f"{need}: {GENERATION_ELSEWHERE}")

    def for_verb(self, verb: str) -> str:
        return f"{self.need}: {memory_advice(verb, generating=True)}"


def out_of_memory(err: BaseException, verb: str = "train") -> str | None:
    """What to tell the user when `err` is the device or host running out of memory (torch's
    OutOfMemoryError on CUDA, the CPU allocator's and MPS's RuntimeError, Python's MemoryError),
    else None; the advice names the options of `verb` (the command that ran)."""
    text = str(err)
    words = ("can't allocate memory", "out of memory")  # the CPU allocator; CUDA, MPS and driver errors
    if not (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or any(w in text.lower() for w in words)):
        return None
    asked = re.search(r"allocate (\d+(?:\.\d+)?) ?(bytes|[KMGT]iB)", text)
    size = ""
    if asked:
        value, unit = float(asked[1]), asked[2]
        size = f" (one allocation of {value / 2**30:.1f} GiB)" if unit == "bytes" else f" (one allocation of {value:g} {unit})"
    advice = memory_advice(verb)
    return f"out of memory{size}: {advice}"
