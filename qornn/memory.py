"""Sizes a user asks for, checked against the machine's free memory before anything is allocated.

A length or batch typed on the command line (or declared by a file) must not end in a
MemoryError, an OOM kill or a swap storm: commands estimate what they will hold at once and
refuse in one line when it exceeds the memory the kernel reports as available."""

from __future__ import annotations

import os

from qornn.errors import QornnError


def available_memory() -> int | None:
    """Bytes the kernel can give without swapping (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(need: int, what: str, advice: str) -> None:
    """One-line QornnError when `need` bytes exceed the available memory."""
    from qornn.npyio import human_bytes

    have = available_memory()
    if have is not None and need > have:
        raise QornnError(f"{what} needs about {human_bytes(need)} of memory but {human_bytes(have)} is available; "
                         f"{advice}")
