"""How much memory this machine can give a process: RAM (at most its container's limit) and swap.

Read on Linux (sysconf, cgroup v2 or v1, /proc/meminfo) by the checks that refuse, before
anything runs, a training run (training/memory_room.py) or a generation (model/decoding_room.py)
the machine cannot hold: Linux lends memory it does not have, and its out-of-memory killer ends
such a process part-way with no message.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # cgroup v2, v1


def host_memory_bytes() -> int | None:
    """This machine's RAM (at most the memory limit of the container the process runs in) plus
    its swap; None off Linux (the checks that read it guard against Linux's out-of-memory killer:
    macOS swaps rather than kills) or where it cannot be read."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    for limit in CGROUP_LIMITS:
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max": no limit
            ram = min(ram, int(text))
    return ram + _swap_bytes()


def _swap_bytes() -> int:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith("SwapTotal:"):
            return int(line.split()[1]) * 1024  # "SwapTotal:  2097148 kB"
    return 0
