"""Generate an hls4ml firmware project for one integer artifact (and synthesize it where the
Xilinx tools exist).

The hls4ml ModelGraph is built from a layer list and a configuration dictionary -- the form
hls4ml's converters produce -- so no converter (and no torch) is involved: two Input layers (the
input codes, shape (max_len, m), and the sequence length, shape (1,)) feeding one QORNN layer.
hls4ml's own writer then writes a normal hls4ml project (firmware/, build_prj.tcl, build_lib.sh,
the bridge for C-simulation, the testbench with reference data, hls4ml_config.yml), and
``qornn_hls.json`` records the artifact's content hash and the options.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np

from qornn.atomic import commit_dir, prepare_dir
from qornn.errors import QornnError

from .layer import LAYER_CLASS, register
from .options import DEFAULT_MAX_LENGTH, DEFAULT_PART, HlsOptions, validate_options

PROJECT_FILE = "qornn_hls.json"
PROJECT_FORMAT = "qornn-hls-project"
PROJECT_VERSION = 2   # 2: io_stream speaks the stream protocol
PROJECT_NAME = "qornn_core"
INPUT_NAME = "qornn_input"     # names sort in argument order: hls4ml_config.yml is written
LENGTH_NAME = "qornn_length"   # with sorted keys, and hls4ml's FilesystemModelGraph reads that order
LAYER_NAME = "qornn"
ARTIFACT_SUBDIR = "artifact"
TB_SEQUENCES = 4
FLOAT64_EXACT = 2**53


def _as_artifact(art):
    from qornn.export.artifact import Artifact, load_artifact

    if isinstance(art, (str, os.PathLike)):
        return load_artifact(art)
    if not isinstance(art, Artifact):
        raise QornnError(f"expected an Artifact or an artifact directory, got {type(art).__name__}")
    return art.validate()


@contextlib.contextmanager
def quiet(log: io.StringIO | None = None):
    """Silence hls4ml's prints and warnings (kept in `log` for error messages)."""
    buf = log if log is not None else io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield buf


def _last_lines(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def length_type(max_length: int) -> str:
    """The sequence-length input: the narrowest ap_uint holding max_length."""
    return f"ap_uint<{max(int(max_length).bit_length(), 1)}>"


def _hls_config(art, opts: HlsOptions, out_dir: Path, tb_in: Path, tb_out: Path) -> dict:
    from hls4ml.utils.config import create_config

    config = create_config(output_dir=str(out_dir), project_name=PROJECT_NAME, backend=opts.backend,
                           part=opts.part, clock_period=opts.clock_period, io_type=opts.io_type,
                           # C-sim reads the weights from text files (hls4ml's default): compiling
                           # them from the headers as ap_int initializers takes minutes at hidden 128.
                           write_weights_txt=True)
    config["HLSConfig"] = {
        "Model": {"Precision": "ap_int<16>", "ReuseFactor": opts.reuse_factor, "Strategy": opts.strategy,
                  # The core is one layer whose time loop must stay a loop: a top-level PIPELINE
                  # (hls4ml's default for io_parallel) would unroll it.
                  "PipelineStyle": "dataflow"},
        "LayerName": {INPUT_NAME: {"Precision": {"result": f"ap_int<{art.input_bits}>"}}}
        | ({} if is_stream(opts) else {LENGTH_NAME: {"Precision": {"result": length_type(opts.max_length)}}}),
    }
    config["InputData"] = str(tb_in)
    config["OutputPredictions"] = str(tb_out)
    return config


def is_stream(opts) -> bool:
    """io_stream projects speak the stream protocol (one beat per step, start/last flags, no length
    input, no maximum length); io_parallel keeps the array form with max_length."""
    return opts.io_type == "io_stream"


def input_names(opts) -> list[str]:
    return [INPUT_NAME] if is_stream(opts) else [INPUT_NAME, LENGTH_NAME]


def _layer_list(art, opts: HlsOptions) -> list[dict]:
    if is_stream(opts):  # one beat: m input codes, then the start and last flags
        inputs = [{"class_name": "InputLayer", "name": INPUT_NAME, "input_shape": [art.input_size + 2]}]
    else:
        inputs = [{"class_name": "InputLayer", "name": INPUT_NAME, "input_shape": [opts.max_length, art.input_size]},
                  {"class_name": "InputLayer", "name": LENGTH_NAME, "input_shape": [1]}]
    return inputs + [
        {
            "class_name": LAYER_CLASS, "name": LAYER_NAME, "inputs": input_names(opts), "qornn_io": opts.io_type,
            "n_in": art.input_size, "n_hidden": art.hidden_size, "n_out": art.output_size,
            "max_len": opts.max_length, "activation": art.activation, "output_mode": art.output_mode,
            "qornn_strategy": opts.strategy.lower(),
            # the aligned multipliers M_W 2^(S-S_W), M_U 2^(S-S_U) and the common shift S (docs/spec.md)
            "m_w": int(art.mult_w), "m_u": int(art.mult_u), "shift": int(art.shift), "h_max": int(art.h_max),
            "recurrent_bits": int(art.recurrent_bits), "input_weight_bits": int(art.input_weight_bits),
            "output_bits": int(art.output_bits), "act_bits": int(art.act_bits),
            "widths": art.widths(),
            "W": art.W, "U": art.U, "V": art.V, "b": art.b, "c": art.c,
        },
    ]


def build_model_graph(art, opts: HlsOptions, out_dir: Path, tb_in: Path, tb_out: Path):
    """The hls4ml ModelGraph of the core (from a layer list, as hls4ml's converters produce it)."""
    register()
    from hls4ml.model import ModelGraph

    config = _hls_config(art, opts, out_dir, tb_in, tb_out)
    return ModelGraph.from_layer_list(config, _layer_list(art, opts), inputs=input_names(opts),
                                      outputs=[LAYER_NAME])


def _testbench_data(art, opts: HlsOptions) -> tuple[np.ndarray, np.ndarray]:
    """A few reference sequences (boundary-seeking inputs, assorted lengths) with the simulator's
    outputs, in the testbench's row layout: [x (max_len*m, zero padded), length] -> y."""
    from qornn.export.simulator import simulate
    from qornn.testing import boundary_inputs

    rng = np.random.default_rng(int(art.content_hash()[:8], 16))
    if is_stream(opts):
        return _stream_testbench_data(art, rng)
    T = opts.max_length
    lengths = sorted({T, max(1, T // 2), max(1, T // 3), 1}, reverse=True)[:TB_SEQUENCES]
    rows_in, rows_out = [], []
    for L in lengths:
        x = boundary_inputs(art, rng, 1, L)
        y = simulate(art, x, return_hidden=False).output[0]
        xp = np.zeros((T, art.input_size), dtype=np.int64)
        xp[:L] = x[0]
        if art.output_mode == "every_step":
            yp = np.zeros((T, art.output_size), dtype=np.int64)
            yp[:L] = y
        else:
            yp = y
        rows_in.append(np.concatenate([xp.ravel(), [L]]))
        rows_out.append(yp.ravel())
    return np.array(rows_in, dtype=np.int64), np.array(rows_out, dtype=np.int64)


def stream_beats(art, seqs) -> np.ndarray:
    """Sequences [(T_i, m) codes] as io_stream beats [x, start, last] (int64, (sum T_i, m+2))."""
    lens = np.array([len(s) for s in seqs], dtype=np.int64)
    beats = np.zeros((int(lens.sum()), art.input_size + 2), dtype=np.int64)
    beats[:, :art.input_size] = np.concatenate(seqs)
    ends = np.cumsum(lens)
    beats[ends - lens, art.input_size] = 1
    beats[ends - 1, art.input_size + 1] = 1
    return beats


def _stream_testbench_data(art, rng) -> tuple[np.ndarray, np.ndarray]:
    """io_stream: one testbench row per beat. every_step: sequences of 1, 2, 5 and 16 steps back to
    back, one output row per beat. last_step: the testbench expects one output per input row, so
    its rows are sequences of one step (the C-simulation tests cover longer ones)."""
    lengths = [1, 2, 5, 16] if art.output_mode == "every_step" else [1] * TB_SEQUENCES
    seqs = [boundary_inputs_np(art, rng, L) for L in lengths]
    from qornn.export.simulator import simulate

    outs = [simulate(art, s[None], return_hidden=False).output[0] for s in seqs]
    y = np.concatenate(outs) if art.output_mode == "every_step" else np.stack(outs)
    return stream_beats(art, seqs), y.reshape(len(y), -1)


def boundary_inputs_np(art, rng, length):
    from qornn.testing import boundary_inputs

    return boundary_inputs(art, rng, 1, length)[0]


def project_meta(art, opts: HlsOptions, output_name: str) -> dict:
    import hls4ml

    from qornn import __version__

    from .layer import weight_bits

    wd = art.widths()
    x_t, y_t = f"ap_int<{art.input_bits}>", f"ap_int<{wd['out']}>"
    return {
        "format": PROJECT_FORMAT,
        "version": PROJECT_VERSION,
        "artifact": {"content_hash": art.content_hash(),
                     "copy": ARTIFACT_SUBDIR},
        "options": opts.as_dict(),
        "model": {"input_size": art.input_size, "hidden_size": art.hidden_size, "output_size": art.output_size,
                  "activation": art.activation, "output_mode": art.output_mode,
                  "input_bits": art.input_bits, "x_max": art.x_max},
        "interface": ({
            "project_name": PROJECT_NAME, "protocol": "stream (docs/hardware.md): one beat per step, no maximum length",
            "inputs": [{"name": INPUT_NAME, "shape": [art.input_size + 2], "type": x_t,
                        "beat": "m input codes, start flag, last flag"}],
            "output": {"name": output_name, "shape": [art.output_size], "type": y_t,
                       "beats": "one per step" if art.output_mode == "every_step" else "one after each last beat"},
        } if is_stream(opts) else {
            "project_name": PROJECT_NAME,
            "inputs": [{"name": INPUT_NAME, "shape": [opts.max_length, art.input_size], "type": x_t},
                       {"name": LENGTH_NAME, "shape": [1], "type": length_type(opts.max_length)}],
            "output": {"name": output_name, "shape": ([opts.max_length, art.output_size]
                                                          if art.output_mode == "every_step" else [art.output_size]),
                       "type": y_t},
        }),
        "types": {"x": x_t, "h": f"ap_int<{art.act_bits}>", "W": f"ap_int<{weight_bits(art.recurrent_bits)}>",
                  "U": f"ap_int<{weight_bits(art.input_weight_bits)}>",
                  "V": f"ap_int<{weight_bits(art.output_bits)}>", "b": f"ap_int<{wd['b']}>", "c": f"ap_int<{wd['c']}>",
                  "acc_w": f"ap_int<{wd['acc_w']}>", "acc_u": f"ap_int<{wd['acc_u']}>", "pre": f"ap_int<{wd['pre']}>",
                  "z": f"ap_int<{wd['z']}>", "zb": f"ap_int<{max(wd['zb'], wd['z'])}>", "y": y_t},
        "csim_exact": max(art.bounds()["out"], art.x_max) < FLOAT64_EXACT,
        "versions": {"qornn": __version__, "hls4ml": hls4ml.__version__},
    }


def generate(art, opts: HlsOptions, target: Path, final: Path) -> None:
    """Write the project for `art` into the empty directory `target`, which will be renamed to `final`."""
    from qornn.export.artifact import save_artifact

    target = Path(target)
    tb_dir = target / "tb_data"
    tb_dir.mkdir(parents=True, exist_ok=True)
    tb_in, tb_out = tb_dir / "qornn_tb_input.npy", tb_dir / "qornn_tb_output.npy"
    rows_in, rows_out = _testbench_data(art, opts)
    np.save(tb_in, rows_in)
    np.save(tb_out, rows_out)
    log = io.StringIO()
    try:
        with quiet(log):
            model = build_model_graph(art, opts, target, tb_in, tb_out)
            model.write()
    except QornnError:
        raise
    except Exception as e:  # hls4ml raises bare Exceptions
        raise QornnError(f"hls4ml could not generate the project: {e} {_last_lines(log.getvalue())}".strip()) from None
    meta = project_meta(art, opts, model.get_output_variables()[0].name)
    save_artifact(art, target / ARTIFACT_SUBDIR)
    (target / PROJECT_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    _retarget_yml(target, final)


def _retarget_yml(prj: Path, final: Path) -> None:
    """hls4ml_config.yml names the directory it was written to; point it at the final one."""
    import yaml

    path = prj / "hls4ml_config.yml"
    cfg = yaml.safe_load(path.read_text())
    old = str(prj)
    final = str(Path(final).resolve())
    for key in ("OutputDir", "InputData", "OutputPredictions"):
        if isinstance(cfg.get(key), str) and cfg[key].startswith(old):
            cfg[key] = final + cfg[key][len(old):]
    shapes = cfg["InputShapes"]
    cfg["InputShapes"] = {k: shapes[k] for k in (INPUT_NAME, LENGTH_NAME) if k in shapes}
    path.write_text(yaml.dump(cfg, sort_keys=False))


def write_project(art, out_dir, backend: str = "Vitis", reuse_factor: int = 1, part: str = DEFAULT_PART,
                  clock_period: float = 5, max_length: int = DEFAULT_MAX_LENGTH, strategy: str = "Latency",
                  force: bool = False, io_type: str = "io_stream") -> Path:
    """Generate the hls4ml project of `art` (an Artifact or an artifact directory) in `out_dir`.

    Atomic: the project is written to a temporary sibling directory and renamed into place; an
    existing non-empty `out_dir` is replaced only with `force`. Returns the project path."""
    art = _as_artifact(art)
    opts = validate_options(art, backend=backend, reuse_factor=reuse_factor, part=part, clock_period=clock_period,
                            max_length=max_length, strategy=strategy, io_type=io_type)
    out = Path(out_dir)
    tmp = prepare_dir(out, force, marker=PROJECT_FILE)
    try:
        generate(art, opts, tmp, out)
        commit_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_meta(prj_dir) -> dict:
    """The project's qornn_hls.json, validated strictly (hls/schema.py): a project directory is the
    user's input, so every key, type and range is checked before any value is used."""
    from .schema import read_meta_file

    prj = Path(prj_dir)
    path = prj / PROJECT_FILE
    if not prj.is_dir():
        raise QornnError(f"firmware project {prj} not found (write one with `qornn hls ART --out {prj}`)")
    if not path.is_file():
        raise QornnError(f"{prj} is not a qornn firmware project ({PROJECT_FILE} missing)")
    return read_meta_file(path, PROJECT_VERSION)


def read_config(prj_dir, meta: dict | None = None) -> dict:
    """The project's hls4ml_config.yml, validated strictly against its qornn_hls.json."""
    from .schema import read_hls_config

    prj = Path(prj_dir)
    return read_hls_config(prj / "hls4ml_config.yml", read_meta(prj) if meta is None else meta)


def options_of(meta: dict) -> HlsOptions:
    return HlsOptions(**meta["options"])


# -- synthesis -------------------------------------------------------------------------------
def _which(*names: str) -> str | None:
    for n in names:
        if shutil.which(n):
            return n
    return None


def require_tool(backend: str, prj=None) -> str:
    """The HLS tool of `backend` on PATH, or a one-line QornnError (checked before anything is written)."""
    from .options import BACKENDS, _choice

    backend = _choice("backend", backend, BACKENDS)
    where = prj if prj is not None else "PRJ"
    if backend == "Vitis":
        tool = _which("vitis-run", "vitis_hls")
        if tool is None:
            raise QornnError(f"Vitis HLS not found on PATH (looked for vitis-run and vitis_hls); source the "
                             f"Vitis settings64.sh, or synthesize elsewhere: cd {where} && vitis_hls -f build_prj.tcl")
    else:
        tool = _which("vivado_hls")
        if tool is None:
            raise QornnError(f"Vivado HLS not found on PATH (looked for vivado_hls); source the Vivado "
                             f"settings64.sh, or synthesize elsewhere: cd {where} && vivado_hls -f build_prj.tcl")
    return tool


def build_project(prj_dir, csim: bool = False, synth: bool = True, cosim: bool = False, export: bool = False,
                  vsynth: bool = False) -> dict:
    """Run HLS synthesis of a generated project (build_prj.tcl) with the backend's tool.

    Needs vitis-run / vitis_hls (Vitis backend) or vivado_hls (Vivado backend) on PATH.
    Returns hls4ml's parsed report (a dict)."""
    meta = read_meta(prj_dir)
    read_config(prj_dir, meta)
    prj = Path(prj_dir).resolve()
    tool = require_tool(meta["options"]["backend"], prj)
    opts = {"reset": False, "csim": csim, "synth": synth, "cosim": cosim, "validation": False,
            "export": export, "vsynth": vsynth, "fifo_opt": False}
    if tool == "vitis_hls":  # Vitis HLS without vitis-run: same script, options from build_opt.tcl
        opt_file = prj / "build_opt.tcl"
        original = opt_file.read_text() if opt_file.is_file() else None
        opt_file.write_text("array set opt {\n" + "".join(f"    {k:<10} {int(v)}\n" for k, v in opts.items()) + "}\n")
        try:
            proc = subprocess.run(["vitis_hls", "-f", "build_prj.tcl"], cwd=prj)
        finally:
            if original is not None:
                opt_file.write_text(original)
        if proc.returncode != 0:
            raise QornnError(f"vitis_hls failed (exit {proc.returncode}); see {prj}/vitis_hls.log")
        from hls4ml.report import parse_vivado_report

        return parse_vivado_report(str(prj)) or {}
    from .csim import linked_model

    model = linked_model(prj)
    try:
        return model.build(**opts) or {}
    except Exception as e:
        raise QornnError(f"HLS synthesis failed: {e}") from None


def compile_project(prj_dir) -> Path:
    """hls4ml compile of a generated project (see qornn.hls.csim.compile_project)."""
    from .csim import compile_project as _compile

    return _compile(prj_dir)
