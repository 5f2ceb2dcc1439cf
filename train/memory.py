"""Refuse a model or batch that cannot fit, before allocating it.

`torch.empty(10**6, 10**6)` asks the allocator for 4 TB: depending on the OS that is a
RuntimeError traceback, the OOM killer, or minutes of swapping. The estimate below counts the
float32 tensors a training step holds (weights, gradients, optimizer moments, Björck's saved
iterates, the time loop's hidden states and their gradients, logits), deliberately on the low
side, and is compared with the memory actually available (MemAvailable, or the GPU's free memory).
"""

from __future__ import annotations

import os

from qornn.errors import QornnError

FLOAT = 4
EVAL_BATCH = 128


def training_bytes(hidden: int, inputs: int, outputs: int, batch: int = 0, length: int = 0,
                   every_step: bool = True, bjorck_iters: int = 15, optimizer: str = "adam") -> int:
    """Bytes of the tensors one training step keeps alive (a lower bound, not an upper one)."""
    n, m, o = hidden, inputs, outputs
    params = n * n + n * m + o * n + o + 2 * n
    moments = 2 if optimizer == "adam" else 1
    weights = params * (2 + moments) + 3 * max(bjorck_iters, 1) * n * n  # + grads, moments, Björck iterates
    b = max(batch, EVAL_BATCH if batch else 0)
    per_seq = length * (m + 3 * n + (3 * o if every_step else 0)) + n + o
    return FLOAT * (weights + b * per_seq)


def available_bytes(device: str = "cpu") -> int | None:
    """Free memory of `device` in bytes (None if unknown)."""
    if device.startswith("cuda"):
        try:
            import torch

            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except Exception:
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1000 or unit == "PB":
            return f"{nbytes:.3g} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1000
    return f"{nbytes:.3g} PB"


def check_memory(hidden: int, inputs: int, outputs: int, batch: int = 0, length: int = 0,
                 every_step: bool = True, bjorck_iters: int = 15, optimizer: str = "adam",
                 device: str = "cpu") -> int:
    """Raise QornnError if the estimate exceeds the available memory; returns the estimate."""
    need = training_bytes(hidden, inputs, outputs, batch, length, every_step, bjorck_iters, optimizer)
    have = available_bytes(device)
    if have is not None and need > have:
        what = f"hidden {hidden}" + (f", batch {batch}, length {length}" if batch else "")
        raise QornnError(f"the model{' and a training batch' if batch else ''} need at least {human(need)} of memory "
                         f"({what}); {device} has {human(have)} available")
    return need
