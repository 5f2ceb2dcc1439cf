"""C-simulation of a generated project: compile it with hls4ml (g++, no Xilinx tools) and run it.

`run_csim` drives hls4ml's own ``predict`` (float64 in and out: every input code and, checked
below, every output code is an integer below 2^53, so float64 carries them exactly; float32
would drop bits past 24) and returns int64 codes shaped like the simulator's output.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np

from qornn.atomic import write_bytes_atomic
from qornn.errors import QornnError
from qornn.export.artifact import check_generated_from

from .project import INPUT_NAME, LENGTH_NAME, _last_lines, read_config, read_meta

# resolved project dir -> ((library path, mtime), FilesystemModelGraph with that library loaded)
_loaded: dict[str, tuple] = {}
CSIM_FILE = "qornn_csim.json"   # which library was compiled, and in which directory


def linked_model(prj_dir):
    """hls4ml's FilesystemModelGraph of an existing project (compile / predict / build)."""
    from hls4ml.utils.link import FilesystemModelGraph

    from .layer import register

    register()
    prj = Path(prj_dir).resolve()
    read_config(prj)  # validated before hls4ml reads it
    model = FilesystemModelGraph(prj)  # prints nothing (safe in threads, see cache.py)
    # The project may have been moved since it was written: hls4ml compiles in OutputDir.
    model.config.config["OutputDir"] = str(prj)
    return model


DRIVER = Path(__file__).parent / "templates" / "qornn_stream_driver.cpp"


def _is_stream(prj: Path) -> bool:
    return read_meta(prj)["options"]["io_type"] == "io_stream"


def library_path(prj_dir) -> Path:
    """io_parallel: hls4ml's C-simulation library; io_stream: the batch driver library."""
    prj = Path(prj_dir).resolve()
    meta = read_meta(prj)
    cfg = read_config(prj, meta)   # Stamp is 8 hex digits: the name stays inside firmware/
    if meta["options"]["io_type"] == "io_stream":
        return prj / "firmware" / f"qornn_stream-{cfg['Stamp']}.so"
    return prj / "firmware" / f"{cfg['ProjectName']}-{cfg['Stamp']}.so"


# g++ children of this process (each in its own process group), killed on an interrupt
_children: set = set()
_children_lock = threading.Lock()


def kill_compilers() -> None:
    """Kill every running compiler process group started by `_run_compiler` (SIGKILL)."""
    with _children_lock:
        procs = list(_children)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _run_compiler(cmd: list[str], cwd: Path, lib: Path) -> None:
    """Run qornn's own fixed g++ command (never a script of the project) into a temporary file
    beside `lib`, renamed onto `lib` once complete. g++ runs in its own process group: on any
    exception (a Ctrl-C included) the whole group (cc1plus, as, ld) is killed and waited for, and
    the partial output is removed."""
    tmp = lib.with_name(f".{lib.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    cmd = [*cmd, "-o", str(tmp)]
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    except OSError as e:
        raise QornnError(f"cannot run {cmd[0]}: {e.strerror or e}") from None
    with _children_lock:
        _children.add(proc)
    try:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise QornnError(f"compiling the C-simulation of {cwd} failed: {_last_lines(err, 4) or f'exit {proc.returncode}'}")
        os.replace(tmp, lib)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        with _children_lock:
            _children.discard(proc)


CXXFLAGS = ["-O2", "-fPIC", "-shared", "-std=c++11", "-w", "-fno-gnu-unique", "-Ifirmware/ap_types", "-Ifirmware"]


def _compile(prj: Path, meta: dict) -> Path:
    """g++ of the top function (firmware/qornn_core.cpp) with qornn's batch driver (io_stream) or
    hls4ml's bridge (io_parallel) into one shared library; the weights are read from
    firmware/weights of this directory. The command is qornn's own: build_lib.sh is not run."""
    import shutil

    lib = library_path(prj)
    if meta["options"]["io_type"] == "io_stream":
        shutil.copy(DRIVER, prj / "qornn_stream_driver.cpp")
        second = "qornn_stream_driver.cpp"
    else:
        second = f"{meta['interface']['project_name']}_bridge.cpp"
    _run_compiler(["g++", *CXXFLAGS, f'-DWEIGHTS_DIR="{prj}/firmware/weights"',
                   f"firmware/{meta['interface']['project_name']}.cpp", second], prj, lib)
    return lib


def library_ready(prj_dir) -> bool:
    """Compiled, and compiled here: the library reads its weights from the absolute path of
    firmware/weights it was built with, so a moved project must be compiled again."""
    from qornn.jsonio import read_json

    prj = Path(prj_dir).resolve()
    lib = library_path(prj)
    if not (prj / CSIM_FILE).is_file():
        return False
    try:
        stamp = read_json(prj / CSIM_FILE)
    except QornnError:
        return False
    return (isinstance(stamp, dict) and lib.is_file() and stamp.get("library") == lib.name
            and stamp.get("compiled_in") == str(prj))


def _forget(prj: Path) -> None:
    """Unload this project's library: dlopen returns an already loaded library of the same path
    even when the file has been rebuilt since, so a rebuilt one must be closed first."""
    _, model = _loaded.pop(str(prj), (None, None))
    lib = getattr(model, "_top_function_lib", None)
    if lib is not None:
        try:
            dlclose = ctypes.CDLL("libdl.so.2").dlclose
            dlclose.argtypes = [ctypes.c_void_p]
            dlclose(lib._handle)
        except OSError:
            pass


def build_library(prj_dir, quiet_output: bool = True) -> Path:
    """Compile the C-simulation library with qornn's own g++ command (nothing is loaded).
    `quiet_output` is kept for compatibility (the compiler output is always captured and its last
    lines go into the error message). Returns the path."""
    prj = Path(prj_dir).resolve()
    meta = read_meta(prj)
    (prj / CSIM_FILE).unlink(missing_ok=True)   # not ready while compiling
    lib = _compile(prj, meta)
    write_bytes_atomic(prj / CSIM_FILE, (json.dumps({"library": lib.name, "compiled_in": str(prj)}) + "\n").encode())
    return lib


def compile_project(prj_dir) -> Path:
    """hls4ml compile of a generated project: build its C-simulation shared library (g++, no
    Xilinx tools) and drop any copy of it loaded in this process. Returns the library path."""
    prj = Path(prj_dir).resolve()
    _forget(prj)
    return build_library(prj)


def _stream_lib(prj: Path):
    """The loaded batch driver of an io_stream project (compiled first if needed)."""
    import types

    lib = library_path(prj)
    if not library_ready(prj):
        _forget(prj)
        build_library(prj)
    key = (str(lib), lib.stat().st_mtime_ns)
    cached = _loaded.get(str(prj))
    if cached is not None and cached[0] == key:
        return cached[1]._top_function_lib
    _forget(prj)
    handle = ctypes.cdll.LoadLibrary(str(lib))
    fn = handle.qornn_stream_run
    fn.restype = ctypes.c_longlong
    fn.argtypes = [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_longlong]
    _loaded[str(prj)] = (key, types.SimpleNamespace(_top_function_lib=handle))
    return handle


def run_stream(prj_dir, seqs, art=None) -> list[np.ndarray]:
    """io_stream: the sequences [(T_i, m) codes] back to back through the core in one call, as
    beats [x, start, last]. Returns per sequence (T_i, o) (every_step) or (o,) (last_step)."""
    from .project import stream_beats

    prj = Path(prj_dir).resolve()
    meta = read_meta(prj)
    _check_artifact(meta, art)
    mdl = meta["model"]
    if meta["options"]["io_type"] != "io_stream":
        raise QornnError(f"{prj} is an io_parallel project; run_stream needs io_stream")

    class _A:  # stream_beats needs only the input size
        input_size = mdl["input_size"]

    beats = np.ascontiguousarray(stream_beats(_A, [np.asarray(s, dtype=np.int64) for s in seqs]))
    every = mdl["output_mode"] == "every_step"
    n_out = len(beats) if every else len(seqs)
    y = np.zeros((n_out, mdl["output_size"]), dtype=np.int64)
    fn = _stream_lib(prj).qornn_stream_run
    got = fn(beats.ctypes.data, len(beats), y.ctypes.data, n_out)
    if got != n_out:
        raise QornnError(f"the core wrote {got} output beats for {len(beats)} input beats, expected {n_out}")
    if not every:
        return list(y)
    ends = np.cumsum([len(s) for s in seqs])
    return [y[e - len(s):e] for s, e in zip(seqs, ends)]


def _model(prj: Path):
    lib = library_path(prj)  # named after the project's Stamp, new on every write
    if not library_ready(prj):
        _forget(prj)
        build_library(prj)
    key = (str(lib), lib.stat().st_mtime_ns)
    cached = _loaded.get(str(prj))
    if cached is not None and cached[0] == key:
        return cached[1]
    _forget(prj)
    model = linked_model(prj)
    names = [v.name for v in model.get_input_variables()]
    if names != [INPUT_NAME, LENGTH_NAME]:
        raise QornnError(f"{prj}/hls4ml_config.yml lists the inputs as {names}, expected {[INPUT_NAME, LENGTH_NAME]}")
    model._top_function_lib = ctypes.cdll.LoadLibrary(str(lib))
    _loaded[str(prj)] = (key, model)
    return model


def _check_artifact(meta: dict, art) -> None:
    check_generated_from(meta, art, "firmware project", "qornn hls")


def run_csim(prj_dir, x_codes, art=None, lengths=None) -> np.ndarray:
    """Run the compiled firmware on input codes of shape (B, T, m) (io_parallel: T <= max length;
    io_stream: any T, all sequences streamed back to back through one driver call).

    `art` (an Artifact or its content hash), when given, must be the artifact the project was
    generated from. `lengths` (B,) optionally gives each sequence its own length <= T (the rest
    of its row is padding). Returns int64 output codes: (B, T, o) for every_step (steps past a
    sequence's length are 0), (B, o) for last_step."""
    prj = Path(prj_dir).resolve()
    meta = read_meta(prj)
    _check_artifact(meta, art)
    model_info, opts = meta["model"], meta["options"]
    m, o, T_max = model_info["input_size"], model_info["output_size"], opts["max_length"]
    x = np.asarray(x_codes)
    if x.ndim != 3 or x.shape[2] != m or x.shape[0] < 1 or x.shape[1] < 1:
        raise QornnError(f"input must have shape (batch, time, {m}), got {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise QornnError(f"the firmware takes integer input codes, got dtype {x.dtype}")
    B, T, _ = x.shape
    stream = opts["io_type"] == "io_stream"
    if T > T_max and not stream:
        raise QornnError(f"sequence length {T} exceeds the firmware's maximum length {T_max}; "
                         f"regenerate the project with --max-length {T} or more")
    xm = model_info["x_max"]
    if x.min() < -xm or x.max() > xm:
        raise QornnError(f"input codes must lie in [-{xm}, {xm}], got {int(x.min())}..{int(x.max())}")
    if not meta.get("csim_exact", False) and not stream:
        raise QornnError("this model's outputs can exceed 2^53, which the float64 C-simulation interface "
                         "cannot carry exactly; the firmware itself is exact, verify it in RTL co-simulation")
    if lengths is None:
        lens = np.full(B, T, dtype=np.int64)
    else:
        lens = np.asarray(lengths)
        if lens.shape != (B,) or not np.issubdtype(lens.dtype, np.integer) or lens.min() < 1 or lens.max() > T:
            raise QornnError(f"lengths must be {B} integers in 1..{T}")
    if stream:  # one call: every sequence back to back, no padding, no maximum length
        ys = run_stream(prj, [x[i, :L] for i, L in enumerate(lens)])
        if model_info["output_mode"] == "last_step":
            return np.stack(ys)
        out = np.zeros((B, T, o), dtype=np.int64)
        for i, (yi, L) in enumerate(zip(ys, lens)):
            out[i, :L] = yi
        return out
    xin = np.zeros((B, T_max, m), dtype=np.float64)
    xin[:, :T] = x
    model = _model(prj)
    xin = np.ascontiguousarray(xin.reshape(B, T_max * m))
    lin = np.ascontiguousarray(lens.astype(np.float64).reshape(B, 1))
    y = np.asarray(model.predict([xin, lin]), dtype=np.float64).reshape(B, -1)
    yi = y.astype(np.int64)
    if not np.array_equal(yi.astype(np.float64), y):  # cannot happen for integer result types
        raise QornnError("C-simulation returned non-integer outputs")
    if model_info["output_mode"] == "every_step":
        return yi.reshape(B, T_max, o)[:, :T].copy()
    return yi.reshape(B, o)
