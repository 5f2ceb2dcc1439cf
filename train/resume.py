"""Crash-safe training state: the `RUN.partial/` directory that a killed training resumes from.

While `qornn train --out RUN` runs, everything lives in the sibling `RUN.partial/`:

    plan.json                 model, task and training settings (written once, atomically)
    metrics.jsonl             appended every step; cut back to the checkpoint's length on resume
    checkpoints/step-N/       the latest complete checkpoint: state.safetensors + state.json
    .lock                     flock'ed by the live trainer (released by the kernel when it dies)

A checkpoint is written into a hidden temp directory and renamed into place, so at every instant
the newest `step-N/` is complete: SIGKILL loses at most the steps since it. It holds the
weights and buffers (STE-Björck's power-iteration vector included), the optimizer's moments,
torch's RNG state (uint8 tensor) and the NumPy Generator's bit-generator state (JSON), the
step and the metrics length; the learning-rate schedule is a pure function of the step. Only
when training ends is RUN.partial turned into RUN (qornn.atomic.commit_dir), so RUN is always
either absent or complete. Nothing is ever pickled; everything read back is validated.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from qornn.errors import QornnError
from qornn.jsonio import field, read_json

PARTIAL_SUFFIX = ".partial"
PLAN_FILE = "plan.json"
PLAN_FORMAT = "qornn-partial"
STATE_FORMAT = "qornn-checkpoint"
CKPT_DIR = "checkpoints"
LOCK_FILE = ".lock"
OPTIM_KEYS = {"adam": ("step", "exp_avg", "exp_avg_sq"), "rmsprop": ("step", "square_avg")}


def partial_dir(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


def run_of(path) -> Path:
    """RUN for either RUN or RUN.partial."""
    p = Path(path)
    return p.with_name(p.name[:-len(PARTIAL_SUFFIX)]) if p.name.endswith(PARTIAL_SUFFIX) else p


def lock_holder(pdir: Path) -> int | None:
    """pid of the live process training in `pdir`, or None if nobody holds its lock."""
    lock = Path(pdir) / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except OSError:
        try:
            return int(os.read(fd, 32).decode().strip() or 0) or -1
        except (ValueError, OSError):
            return -1
    finally:
        os.close(fd)


class Partial:
    """An in-progress run directory, locked by this process."""

    def __init__(self, out, create: bool):
        self.out = Path(out)
        self.dir = partial_dir(self.out)
        self.last_step: int | None = None
        self._lock_fd = None
        if create:
            self.dir.mkdir(parents=True)
        elif not self.dir.is_dir():
            raise QornnError(f"{self.out} has no unfinished training to resume ({self.dir} not found)")
        try:
            self._acquire()
        except BaseException:
            self.release()
            if create:
                shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _acquire(self) -> None:
        self._lock_fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            pid = lock_holder(self.dir)
            raise QornnError(f"{self.out} is being trained by another process"
                             f"{f' (pid {pid})' if pid and pid > 0 else ''}; wait for it or stop it") from None
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        self._clean_temps()

    # -- lifecycle ---------------------------------------------------------------------------
    def _clean_temps(self) -> None:
        """Temp checkpoints of an earlier, dead trainer (we hold the lock: nobody else writes here)."""
        root = self.dir / CKPT_DIR
        if root.is_dir():
            for p in root.iterdir():
                if p.name.startswith("."):
                    shutil.rmtree(p, ignore_errors=True)
        for p in self.dir.iterdir():
            if p.name.startswith(".") and p.name != LOCK_FILE:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def discard(self) -> None:
        """Remove the whole directory (nothing worth resuming)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.release()

    def finish(self, force: bool) -> None:
        """RUN.partial -> RUN: drop the resume state, then rename (an existing RUN only with force)."""
        from qornn.atomic import commit_dir

        if self.out.exists() and not force and (not self.out.is_dir() or any(self.out.iterdir())):
            raise QornnError(f"output directory {self.out} appeared while training; pass --force to replace it")
        shutil.rmtree(self.dir / CKPT_DIR, ignore_errors=True)
        (self.dir / PLAN_FILE).unlink(missing_ok=True)
        (self.dir / LOCK_FILE).unlink(missing_ok=True)
        commit_dir(self.dir, self.out)
        self.release()

    # -- plan ----------------------------------------------------------------------------------
    def write_plan(self, plan: dict) -> None:
        write_json_atomic(self.dir / PLAN_FILE, {"format": PLAN_FORMAT, "version": 1, **plan})

    def read_plan(self) -> dict:
        path = self.dir / PLAN_FILE
        plan = read_json(path, "training plan")
        if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
            raise QornnError(f"{path}: not a qornn training plan (field 'format' must be {PLAN_FORMAT!r})")
        field(plan, "version", int, 1, 1, where=str(path))
        for k in ("model", "task", "train"):
            field(plan, k, dict, where=str(path))
        field(plan, "force", bool, where=str(path), default=False)
        return plan

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, Path]]:
        root = self.dir / CKPT_DIR
        if not root.is_dir():
            return []
        found = []
        for p in root.iterdir():
            if p.name.startswith("step-") and p.name[5:].isdigit() and len(p.name) < 40:
                found.append((int(p.name[5:]), p))
        return sorted(found)

    def save(self, step: int, model, opt, rng: np.random.Generator, metrics_bytes: int, elapsed: float,
             optimizer: str) -> None:
        """Write the checkpoint of `step` atomically, then drop the older ones."""
        from safetensors.torch import save as st_save

        root = self.dir / CKPT_DIR
        root.mkdir(exist_ok=True)
        final = root / f"step-{step:012d}"
        if not final.exists():
            tmp = root / f".tmp-step-{step}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            tensors, meta = state_dicts(model, opt, rng, optimizer)
            meta |= {"format": STATE_FORMAT, "version": 1, "step": step, "metrics_bytes": metrics_bytes,
                     "elapsed": round(elapsed, 3)}
            try:
                _write_synced(tmp / "state.safetensors", st_save(tensors))
                _write_synced(tmp / "state.json", (json.dumps(meta) + "\n").encode())
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        for s, p in self.checkpoints():
            if s < step:
                shutil.rmtree(p, ignore_errors=True)
        self.last_step = step

    def load(self, model, opt, optimizer: str) -> tuple[int, np.random.Generator, int, float]:
        """Restore the newest checkpoint into model and opt; returns (step, rng, metrics_bytes, elapsed)."""
        ckpts = self.checkpoints()
        if not ckpts:
            raise QornnError(f"{self.dir}: no checkpoint to resume from; delete it and train again")
        step, path = ckpts[-1]
        rng, metrics_bytes, elapsed = load_state(path, step, model, opt, optimizer)
        self.last_step = step
        return step, rng, metrics_bytes, elapsed


# -- state <-> tensors + JSON ------------------------------------------------------------------
def state_dicts(model, opt, rng: np.random.Generator, optimizer: str) -> tuple[dict, dict]:
    """Flatten model, optimizer and RNG state into safetensors tensors and a JSON-able dict."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for k in OPTIM_KEYS[optimizer]:
            tensors[f"optim.{i}.{k}"] = st[k].detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    dev = next(model.parameters()).device
    if dev.type == "cuda":
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return tensors, {"numpy_rng": rng.bit_generator.state, "optimizer": optimizer}


def load_state(path: Path, step: int, model, opt, optimizer: str):
    """Validate a checkpoint directory against `model`/`opt` and restore it (one-line errors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta_path, t_path = path / "state.json", path / "state.safetensors"
    where = str(meta_path)
    meta = read_json(meta_path, "checkpoint state")
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise QornnError(f"{meta_path}: not a qornn checkpoint (field 'format' must be {STATE_FORMAT!r})")
    field(meta, "version", int, 1, 1, where=where)
    field(meta, "step", int, step, step, where=where)
    field(meta, "optimizer", str, where=where, choices=(optimizer,))
    metrics_bytes = field(meta, "metrics_bytes", int, 0, 2**62, where=where)
    elapsed = field(meta, "elapsed", float, 0.0, 1e12, where=where)
    rng = numpy_rng_from(meta, where)
    try:
        tensors = load_file(str(t_path))
    except FileNotFoundError:
        raise QornnError(f"{t_path}: checkpoint tensors not found") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise QornnError(f"{t_path}: corrupt checkpoint ({str(e).splitlines()[0][:120]})") from None

    def take(name: str, like: torch.Tensor) -> torch.Tensor:
        if name not in tensors:
            raise QornnError(f"{t_path}: tensor '{name}' missing")
        t = tensors.pop(name)
        if t.dtype != like.dtype or tuple(t.shape) != tuple(like.shape):
            raise QornnError(f"{t_path}: tensor '{name}' is {t.dtype} {tuple(t.shape)}, expected "
                             f"{like.dtype} {tuple(like.shape)}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise QornnError(f"{t_path}: tensor '{name}' holds NaN or inf")
        return t

    model_state = {k: take(f"model.{k}", v) for k, v in model.state_dict().items()}
    params = [p for g in opt.param_groups for p in g["params"]]
    optim_state = {}
    for i, p in enumerate(params):
        present = [k for k in OPTIM_KEYS[optimizer] if f"optim.{i}.{k}" in tensors]
        if not present:
            continue
        like = {"step": torch.zeros((), dtype=torch.float32)}
        optim_state[i] = {k: take(f"optim.{i}.{k}", like.get(k, p.detach().cpu())) for k in OPTIM_KEYS[optimizer]}
        s = float(optim_state[i]["step"])
        if not 0 < s <= step:
            raise QornnError(f"{t_path}: optimizer state of parameter {i} is at step {s}, outside 1..{step}")
    torch_rng = take("rng.torch", torch.get_rng_state())
    cuda_rng = [tensors.pop(k) for k in sorted((k for k in tensors if k.startswith("rng.cuda.")),
                                               key=lambda k: (len(k), k))]
    if any(t.dtype != torch.uint8 or t.ndim != 1 for t in cuda_rng):
        raise QornnError(f"{t_path}: a CUDA RNG state is not a 1-D uint8 tensor")
    if tensors:
        raise QornnError(f"{t_path}: unexpected tensor '{sorted(tensors)[0]}'")
    model.load_state_dict(model_state)
    sd = opt.state_dict()
    opt.load_state_dict({"state": optim_state, "param_groups": sd["param_groups"]})
    torch.set_rng_state(torch_rng)
    dev = next(model.parameters()).device
    if cuda_rng and dev.type == "cuda":
        torch.cuda.set_rng_state_all(cuda_rng)
    return rng, metrics_bytes, elapsed


def numpy_rng_from(meta: dict, where: str) -> np.random.Generator:
    """A PCG64 Generator in exactly the saved state (validated field by field)."""
    field(meta, "numpy_rng.bit_generator", str, where=where, choices=("PCG64",))
    st = {"bit_generator": "PCG64",
          "state": {"state": field(meta, "numpy_rng.state.state", int, 0, 2**128 - 1, where=where),
                    "inc": field(meta, "numpy_rng.state.inc", int, 0, 2**128 - 1, where=where)},
          "has_uint32": field(meta, "numpy_rng.has_uint32", int, 0, 1, where=where),
          "uinteger": field(meta, "numpy_rng.uinteger", int, 0, 2**32 - 1, where=where)}
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = st
    except (ValueError, TypeError) as e:
        raise QornnError(f"{where}: invalid numpy RNG state ({e})") from None
    return rng


# -- small file helpers --------------------------------------------------------------------------
def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: Path, obj) -> None:
    from qornn.atomic import write_bytes_atomic

    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def is_no_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
