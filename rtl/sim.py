"""Run a generated core in Verilator on input codes and return its output and hidden codes.

All sequences of a call go through one model instance as one stream of beats (the first beat of
each sequence has `start`, the final one `last`), back to back, with random valid/ready stalls on
both sides; the harness also counts handshake violations (an output beat that changes or
disappears before it is taken, or an extra beat). One call is one process: a C++ loop over the
cycles, no Python per cycle.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from qornn.errors import QornnError

from qornn.export.artifact import check_generated_from

from .cache import cached_build
from .project import read_meta

DEFAULT_STALLS = (75, 75)   # percent of cycles with in_valid offered / out_ready given


def _check_artifact(meta: dict, art) -> None:
    check_generated_from(meta, art, "RTL core", "qornn rtl")


def executable(rtl_dir) -> Path:
    d = Path(rtl_dir)
    meta = read_meta(d)
    return cached_build((d / "qornn_core.v").read_text(), meta)


def run_stream(rtl_dir, seqs, art=None, seed: int = 0, stalls=DEFAULT_STALLS) -> dict:
    """Stream the sequences (a list of (T_i, m) code arrays) back to back through the core.

    Returns {'y': [per sequence: (T_i, o) every_step or (o,) last_step], 'h': [(T_i, n)],
    'cycles', 'steps', 'violations'}. Raises QornnError on a timeout (a core that stops taking
    beats) or a protocol violation."""
    d = Path(rtl_dir)
    meta = read_meta(d)
    _check_artifact(meta, art)
    mdl = meta["model"]
    m, n, o, xm = mdl["input_size"], mdl["hidden_size"], mdl["output_size"], mdl["x_max"]
    every = mdl["output_mode"] == "every_step"
    seqs = [np.asarray(s) for s in seqs]
    for s in seqs:
        if s.ndim != 2 or s.shape[1] != m or s.shape[0] < 1:
            raise QornnError(f"each sequence must have shape (time, {m}), got {s.shape}")
        if not np.issubdtype(s.dtype, np.integer):
            raise QornnError(f"the core takes integer input codes, got dtype {s.dtype}")
        if s.min() < -xm or s.max() > xm:
            raise QornnError(f"input codes must lie in [-{xm}, {xm}], got {int(s.min())}..{int(s.max())}")
    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    total = int(lens.sum())
    beats = np.zeros((total, m + 1), dtype=np.int32)
    beats[:, :m] = np.concatenate(seqs)
    ends = np.cumsum(lens)
    beats[ends - lens, m] |= 1
    beats[ends - 1, m] |= 2
    exe = executable(d)
    per_step = int(meta["stats"].get("max_cycles_per_step", meta["stats"]["cycles_per_step"]))
    pin, pout = stalls
    max_cycles = (total + 8) * (per_step + 4) * 100 // max(1, min(pin, pout)) * 4 + 10_000
    with tempfile.TemporaryDirectory(prefix="qornn-rtl-") as tmp:
        fin, fout = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        with open(fin, "wb") as f:
            f.write(np.int64(total).tobytes())
            f.write(beats.tobytes())
        proc = subprocess.run([str(exe), str(fin), str(fout), str(int(seed)), str(pin), str(pout), str(max_cycles)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise QornnError(f"the Verilator harness failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
        raw = fout.read_bytes()
    head = np.frombuffer(raw[:48], dtype=np.int64)
    nout, nh, cycles, accepted, violations, timed_out = (int(v) for v in head)
    if timed_out:
        raise QornnError(f"the core stopped: {accepted} of {total} input beats taken, {nout} output beats in "
                         f"{cycles} cycles")
    if violations:
        raise QornnError(f"the core broke the stream protocol {violations} times (an output beat changed or "
                         "vanished before it was taken, or an extra beat appeared)")
    ybytes = nout * (o + 1) * 8
    yl = np.frombuffer(raw[48:48 + ybytes], dtype=np.int64).reshape(nout, o + 1)
    h = np.frombuffer(raw[48 + ybytes:], dtype=np.int32).reshape(nh, n).astype(np.int64)
    want_out = total if every else len(seqs)
    if nout != want_out or nh != total:
        raise QornnError(f"the core gave {nout} output beats and {nh} hidden states for {total} steps "
                         f"(expected {want_out} and {total})")
    last = yl[:, o]
    want_last = np.zeros(total, dtype=np.int64)
    want_last[ends - 1] = 1
    if not np.array_equal(last, want_last if every else np.ones(len(seqs), dtype=np.int64)):
        raise QornnError("out_last does not mark the ends of the sequences")
    y = yl[:, :o]
    starts = ends - lens
    ys = [y[a:b] for a, b in zip(starts, ends)] if every else [y[i] for i in range(len(seqs))]
    hs = [h[a:b] for a, b in zip(starts, ends)]
    return {"y": ys, "h": hs, "cycles": cycles, "steps": total, "violations": violations}


def run_rtl(rtl_dir, x_codes, art=None, seed: int = 0, stalls=DEFAULT_STALLS):
    """(B, T, m) codes -> (y, h) shaped like the simulator's output and hidden codes."""
    x = np.asarray(x_codes)
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1:
        raise QornnError(f"input must have shape (batch, time, features), got {x.shape}")
    r = run_stream(rtl_dir, list(x), art, seed=seed, stalls=stalls)
    return np.stack(r["y"]), np.stack(r["h"])
