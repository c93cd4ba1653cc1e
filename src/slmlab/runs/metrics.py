"""metrics.jsonl: one JSON object per logged step, appended and flushed as training goes."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..files import atomic_write_text


def perplexity(loss: float) -> float:
    """exp(loss), capped at exp(50) so a diverged run still gives a finite number."""
    return math.exp(min(loss, 50.0))


def _clean(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsLog:
    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a resume starts from)."""
        if self.path.is_file():
            kept = [line for line in self.read() if line.get("step", 0) <= step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
        return records
