"""metrics.jsonl: one JSON object per logged step, appended and flushed as training goes."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import RunFileError
from ..files import atomic_write_text, json_text


def perplexity(loss: float) -> float:
    """exp(loss), exactly: inf past float64's range (a loss above ~709.78 nats per token, a
    diverged run). Never capped: a cap made diverged runs' perplexities equal (a std of 0), and a
    sweep's paired statistics took the capped values for measurements. JSON files hold inf as
    null (`files.json_text`); `RunDir.read_summary` gives it back as inf."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


NUMERIC = ("step", "tokens", "loss", "val_loss", "val_ppl", "val_bpb", "lr", "grad_norm", "dt_ms", "tokens_per_s", "nan_skips")


def _number(value) -> bool:
    """A metric's value: a number, or None (not finite when written)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


class MetricsLog:
    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json_text(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a resume starts from)."""
        if self.path.is_file():
            kept = [line for line in self.read() if line.get("step", 0) <= step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def read(self) -> list[dict]:
        """Every record; a last line cut short by a crash is skipped, any other damage (bytes that
        are not UTF-8 JSON objects) is a RunFileError naming the file and line."""
        if not self.path.exists():
            return []
        fix = "restore the file from a copy, or delete the damaged lines"
        try:
            lines = self.path.read_bytes().decode("utf-8").splitlines()
        except UnicodeDecodeError as err:
            line = self.path.read_bytes()[: err.start].count(b"\n") + 1
            raise RunFileError(f"metrics log {self.path} is damaged (line {line} is not UTF-8 text); {fix}") from None
        except OSError as err:
            raise RunFileError(f"metrics log {self.path} cannot be read ({err.strerror or err})") from None
        records = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    continue  # the last line, cut short by a crash mid-append
                raise RunFileError(f"metrics log {self.path} is damaged (line {number} is not JSON); {fix}") from None
            if not isinstance(record, dict) or not all(_number(record.get(k)) for k in NUMERIC) or "step" not in record:
                raise RunFileError(f"metrics log {self.path} is damaged (line {number} is not a step record); {fix}")
            records.append(record)
        return records
