"""Run a generated core in Verilator on input codes and return its output and hidden codes.

All sequences of a call go through one model instance as one stream of beats (the first beat of
each sequence has `start`, the final one `last`), back to back, with random valid/ready stalls on
both sides; the harness also counts handshake violations (an output beat that changes or
disappears before it is taken, or an extra beat). A call runs the compiled harness (a C++ loop
over the cycles, no Python per cycle), one process per group of sequences, the groups at once.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from qornn.errors import QornnError

from qornn.export.artifact import check_generated_from

from .cache import cached_build
from .project import read_meta

# Percent of cycles with in_valid offered / out_ready given in `qornn verify --rtl`. A stall
# cycle costs a whole clock of simulation, so stalls are what verification pays for; at 10 % a
# 1000-step sequence still meets ~100 input and ~100 output stalls. The protocol tests run their
# own, heavier patterns (firmware_tests/test_rtl.py: 60/45 and 30/90).
DEFAULT_STALLS = (90, 90)


def _check_artifact(meta: dict, art) -> None:
    check_generated_from(meta, art, "RTL core", "qornn rtl")


def executable(rtl_dir) -> Path:
    d = Path(rtl_dir)
    meta = read_meta(d)
    return cached_build((d / "qornn_core.v").read_text(), meta)


def default_workers() -> int:
    """Harness processes per call: the CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _groups(lens: np.ndarray, workers: int | None) -> list[tuple[int, int]]:
    """Contiguous runs [a, b) of the sequences, at most `workers` of them (None: default_workers()),
    of about equal total length."""
    k = max(1, min(len(lens), int(workers) if workers else default_workers()))
    cum = np.cumsum(lens)
    cuts = [0]
    for g in range(1, k):
        c = int(np.searchsorted(cum, cum[-1] * g / k)) + 1   # the run ends with the sequence that reaches its share
        if cuts[-1] < c < len(lens):
            cuts.append(c)
    cuts.append(len(lens))
    return list(zip(cuts[:-1], cuts[1:]))


def _read_out(raw: bytes, o: int, n: int):
    head = np.frombuffer(raw[:48], dtype=np.int64)
    nout, nh, cycles, accepted, violations, timed_out = (int(v) for v in head)
    ybytes = nout * (o + 1) * 8
    yl = np.frombuffer(raw[48:48 + ybytes], dtype=np.int64).reshape(nout, o + 1)
    h = np.frombuffer(raw[48 + ybytes:48 + ybytes + nh * n * 4], dtype=np.int32).reshape(nh, n)
    return nout, nh, cycles, accepted, violations, timed_out, yl, h


def run_stream(rtl_dir, seqs, art=None, seed: int = 0, stalls=DEFAULT_STALLS, workers: int | None = None) -> dict:
    """Stream the sequences (a list of (T_i, m) code arrays) back to back through the core (see
    `_stream`). Returns {'y': [per sequence: (T_i, o) every_step or (o,) last_step], 'h': [(T_i, n)],
    'cycles', 'steps', 'violations'}."""
    r = _stream(rtl_dir, seqs, art, seed, stalls, workers)
    y, h, ends = r.pop("y"), r.pop("h"), r.pop("ends")
    starts = ends - r.pop("lens")
    r["y"] = [y[a:b] for a, b in zip(starts, ends)] if r.pop("every") else list(y)
    r["h"] = [h[a:b] for a, b in zip(starts, ends)]
    return r


def _stream(rtl_dir, seqs, art, seed, stalls, workers) -> dict:
    """Stream the sequences (a list of (T_i, m) code arrays) back to back through the core.

    The sequences are independent (each begins with a start beat), so they are cut into at most
    `workers` contiguous groups (default: one per CPU core) and each group streams through its own
    harness process (its own model instance, stall seed seed + group index), all at once; the
    outputs are put back in order. 'cycles' is the sum over the processes.

    Returns {'y': (output beats, o), 'h': (steps, n) int64 codes of all sequences in order,
    'lens', 'ends', 'every', 'cycles', 'steps', 'violations'}. Raises QornnError on a timeout (a
    core that stops taking beats) or a protocol violation."""
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
    groups = _groups(lens, workers)
    with tempfile.TemporaryDirectory(prefix="qornn-rtl-") as tmp:
        procs, runs = [], []
        try:
            for k, (a, b) in enumerate(groups):   # one harness process per group, all at once
                lo, hi = int(ends[a] - lens[a]), int(ends[b - 1])
                steps = hi - lo
                max_cycles = (steps + 8) * (per_step + 4) * 100 // max(1, min(pin, pout)) * 4 + 10_000
                fin, fout = Path(tmp) / f"in{k}.bin", Path(tmp) / f"out{k}.bin"
                with open(fin, "wb") as f:
                    f.write(np.int64(steps).tobytes())
                    f.write(beats[lo:hi].tobytes())
                cmd = [str(exe), str(fin), str(fout), str(int(seed) + k), str(pin), str(pout), str(max_cycles)]
                procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
                              fout))
            for proc, fout in procs:
                _, err = proc.communicate()
                if proc.returncode != 0:
                    raise QornnError(f"the Verilator harness failed (exit {proc.returncode}): {err.strip()[-300:]}")
                runs.append(_read_out(fout.read_bytes(), o, n))
            for (a, b), r in zip(groups, runs):   # each process accounts for its own sequences
                steps = int(lens[a:b].sum())
                if not r[5] and (r[0] != (steps if every else b - a) or r[1] != steps):
                    raise QornnError(f"a harness process gave {r[0]} output beats and {r[1]} hidden states for "
                                     f"its {b - a} sequences of {steps} steps")
        finally:
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    nout, nh, cycles, accepted, violations = (sum(r[i] for r in runs) for i in range(5))
    if any(r[5] for r in runs):
        raise QornnError(f"the core stopped: {accepted} of {total} input beats taken, {nout} output beats in "
                         f"{cycles} cycles")
    if violations:
        raise QornnError(f"the core broke the stream protocol {violations} times (an output beat changed or "
                         "vanished before it was taken, or an extra beat appeared)")
    yl = np.concatenate([r[6] for r in runs])
    h = np.concatenate([r[7] for r in runs], dtype=np.int64)   # one copy: int32 codes -> int64
    want_out = total if every else len(seqs)
    if nout != want_out or nh != total:
        raise QornnError(f"the core gave {nout} output beats and {nh} hidden states for {total} steps "
                         f"(expected {want_out} and {total})")
    last = yl[:, o]
    want_last = np.zeros(total, dtype=np.int64)
    want_last[ends - 1] = 1
    if not np.array_equal(last, want_last if every else np.ones(len(seqs), dtype=np.int64)):
        raise QornnError("out_last does not mark the ends of the sequences")
    return {"y": yl[:, :o], "h": h, "lens": lens, "ends": ends, "every": every, "cycles": cycles,
            "steps": total, "violations": violations}


def run_rtl(rtl_dir, x_codes, art=None, seed: int = 0, stalls=DEFAULT_STALLS, workers: int | None = None):
    """(B, T, m) codes -> (y, h) shaped like the simulator's output and hidden codes."""
    x = np.asarray(x_codes)
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1:
        raise QornnError(f"input must have shape (batch, time, features), got {x.shape}")
    B, T = x.shape[:2]
    r = _stream(rtl_dir, list(x), art, seed, stalls, workers)
    y = r["y"].reshape(B, T, -1) if r["every"] else r["y"]   # equal lengths: views, no copies
    return y, r["h"].reshape(B, T, -1)
