"""`qornn simulate`: a .npy input streamed through the simulator in blocks, outputs written atomically.

Memory stays bounded whatever the input's length or batch: sequences go through in row chunks,
each in time blocks (`STREAM_BYTES` of input and outputs per block), and the simulator's state
(`Stream`) carries from one block to the next exactly, so the integers are those of one
`simulate` call on the whole array. Outputs go to temp files block by block (qornn.npyio) and
are renamed into place only when every output is complete.

Before anything is computed: the input header is checked against the file, every output path is
checked (not an input, not inside the artifact, not a link, FIFO or device, not the same as the
other output, and an existing file is replaced only with --force), and the outputs' sizes against
the free disk space.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from qornn.atomic import refuse_overlap
from qornn.errors import QornnError
from qornn.npyio import NpyInput, OutputSet, human_bytes

STREAM_BYTES = 64 << 20     # input + output bytes of one block (the simulator's own buffers are ~1 MB)


def _check_output(path, flag: str, inputs: list, force: bool) -> Path:
    if not str(path).strip():
        raise QornnError(f"{flag} needs a file name")
    p = Path(path)
    refuse_overlap(p, inputs, flag)
    if p.is_dir():
        raise QornnError(f"{flag} {p} is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise QornnError(f"{flag} {p}: directory {parent} does not exist")
    if os.path.lexists(p):
        for i in inputs:
            try:
                if i is not None and os.path.samefile(p, i):
                    raise QornnError(f"{flag} {p} is the same file as the input {i}; choose another path")
            except OSError:
                pass
        if not force:
            raise QornnError(f"{flag} {p} already exists; pass --force to replace it")
    return p


def plan_blocks(batch: int, length: int, bytes_per_step: int, budget: int | None = None) -> tuple[int, int]:
    """(rows, steps) of one block: about `budget` bytes, whole sequences when they fit."""
    budget = budget or STREAM_BYTES
    per_seq = length * bytes_per_step
    if per_seq <= budget:
        return max(1, min(batch, budget // per_seq)), length
    return 1, max(1, budget // bytes_per_step)


def simulate_files(art_dir, input_path, out, hidden_out=None, real: bool = False, force: bool = False) -> dict:
    """Run the artifact on a (batch, time, m) .npy file; returns a summary for the CLI."""
    from qornn.export.artifact import load_artifact
    from qornn.export.simulator import Stream, check_input

    art = load_artifact(art_dir)
    inp = NpyInput(input_path)
    if len(inp.shape) != 3 or inp.shape[2] != art.input_size or inp.shape[0] < 1 or inp.shape[1] < 1:
        raise QornnError(f"input must have shape (batch, time, {art.input_size}), got {inp.shape}")
    B, T, m = inp.shape
    n, o = art.hidden_size, art.output_size
    inputs = [input_path, art_dir]
    outp = _check_output(out, "--out", inputs, force)
    hidp = None
    if hidden_out is not None:
        hidp = _check_output(hidden_out, "--hidden-out", inputs, force)
        same = hidp.resolve() == outp.resolve()
        if not same and os.path.lexists(hidp) and os.path.lexists(outp):
            same = os.path.samefile(hidp, outp)
        if same:
            raise QornnError(f"--out and --hidden-out are the same file {out}; give two paths")
    every = art.output_mode == "every_step"
    y_shape = (B, T, o) if every else (B, o)
    sizes = {outp: 8 * int(np.prod(y_shape))}
    if hidp is not None:
        sizes[hidp] = 8 * B * T * n
    _check_disk(sizes)

    per_step = m * (inp.dtype.itemsize + 8) + 8 * (o if every else 0) + (8 * n if hidp is not None else 0)
    rows, steps = plan_blocks(B, T, per_step)
    dt = np.float64 if real else np.int64
    with OutputSet() as outs:
        y_file = outs.add(outp, dt, y_shape)
        h_file = outs.add(hidp, dt, (B, T, n)) if hidp is not None else None
        for b0 in range(0, B, rows):
            b1 = min(B, b0 + rows)
            s = Stream(art, b1 - b0)
            for t0 in range(0, T, steps):
                t1 = min(T, t0 + steps)
                x = check_input(art, inp.block(b0, b1, t0, t1))
                y, h = s.run(x, hidden=h_file is not None)
                if y is not None:
                    y_file.write((b0, t0), y * art.output_scale if real else y)
                if h is not None:
                    h_file.write((b0, t0), h * art.hidden_scale if real else h)
                del x, y, h
            if not every:
                y = s.last_output()
                y_file.write((b0,), y * art.output_scale if real else y)
    return {"batch": B, "time": T, "output_shape": y_shape, "output_scale": art.output_scale}


def _check_disk(sizes: dict) -> None:
    """The outputs must fit in the free space of their file systems (together where they share one)."""
    need: dict = {}
    for p, size in sizes.items():
        parent = p.parent if str(p.parent) else Path(".")
        dev = os.stat(parent).st_dev
        d = need.setdefault(dev, [parent, 0])
        d[1] += size
    for parent, total in need.values():
        free = shutil.disk_usage(parent).free
        if total > free:
            raise QornnError(f"the outputs need {human_bytes(total)} but {parent} has {human_bytes(free)} free; "
                             "simulate fewer or shorter sequences, or drop --hidden-out")
