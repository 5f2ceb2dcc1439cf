"""The Verilog cores (qornn.rtl) in Verilator equal the NumPy simulator, integer for integer.

Every configuration of rtl_cases.py streams sequences of assorted lengths (1 included) back to
back through one model instance with random valid/ready stalls on both sides; every output code
and every hidden code (the dbg_h port) is compared with np.array_equal. The harness also fails
on handshake violations. Builds are cached by content, so a warm run compiles nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from qornn.errors import QornnError
from qornn.export.artifact import save_artifact
from qornn.export.simulator import simulate
from qornn.rtl import run_rtl, run_stream, write_rtl
from qornn.rtl.sim import executable
from qornn.testing import boundary_inputs, random_artifact

from .rtl_cases import CASES, make_artifact, options


@pytest.fixture(scope="session")
def cores(tmp_path_factory):
    """name -> (artifact, RTL dir with its Verilator build ready), built two at a time."""
    root = tmp_path_factory.mktemp("rtl")
    out = {}
    for name in CASES:
        art = make_artifact(name)
        out[name] = (art, write_rtl(art, root / name, **options(name)))
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda v: executable(v[1]), out.values()))
    return out


def _expected(art, seqs):
    ys, hs = [], []
    for s in seqs:
        r = simulate(art, s[None])
        ys.append(r.output[0])
        hs.append(r.hidden[0])
    return ys, hs


@pytest.mark.parametrize("name", list(CASES))
def test_back_to_back_sequences_with_stalls(cores, name):
    art, d = cores[name]
    rng = np.random.default_rng(11)
    lengths = [1, 7, 1, 40, 2, 25, 1, 60]
    seqs = [boundary_inputs(art, rng, 1, L)[0] if k % 2 else
            rng.integers(-art.x_max, art.x_max + 1, size=(L, art.input_size)) for k, L in enumerate(lengths)]
    for stalls in ((100, 100), (60, 45), (30, 90)):
        r = run_stream(d, seqs, art, seed=int(rng.integers(1 << 30)), stalls=stalls)
        want_y, want_h = _expected(art, seqs)
        for k in range(len(seqs)):
            assert np.array_equal(r["h"][k], want_h[k]), f"hidden codes differ in sequence {k} (stalls {stalls})"
            assert np.array_equal(r["y"][k], want_y[k]), f"output codes differ in sequence {k} (stalls {stalls})"
    assert any(np.any(np.abs(h) == art.h_max) for h in want_h)    # the clamp was reached


@pytest.mark.parametrize("name", ["po2_h16", "h33_narrow_w2_u7_a16_relu_last", "folded_h13_p4_w3_u5"])
def test_a_long_sequence(cores, name):
    """3000+ steps in one sequence, then a short one right behind it."""
    art, d = cores[name]
    rng = np.random.default_rng(12)
    T = 3001 if "folded" not in name else 3000
    seqs = [boundary_inputs(art, rng, 1, T)[0], boundary_inputs(art, rng, 1, 3)[0]]
    r = run_stream(d, seqs, art, seed=5)
    want_y, want_h = _expected(art, seqs)
    for k in range(2):
        assert np.array_equal(r["y"][k], want_y[k]) and np.array_equal(r["h"][k], want_h[k])


@pytest.mark.parametrize("name", ["po2_h16", "folded_h13_p4_w3_u5"])
def test_sequences_split_over_harness_processes(cores, name):
    """run_stream cuts the sequences into groups, one harness process each: the codes, in order,
    are those of the simulator whatever the number of processes (and so those of one process)."""
    art, d = cores[name]
    rng = np.random.default_rng(13)
    seqs = [boundary_inputs(art, rng, 1, L)[0] for L in (30, 1, 12, 45, 2, 20, 1)]
    want_y, want_h = _expected(art, seqs)
    for workers in (1, 2, 3, 7, 50):
        r = run_stream(d, seqs, art, seed=9, stalls=(60, 45), workers=workers)
        for k in range(len(seqs)):
            assert np.array_equal(r["y"][k], want_y[k]) and np.array_equal(r["h"][k], want_h[k]), (workers, k)
        assert r["steps"] == sum(len(s) for s in seqs) and r["cycles"] >= r["steps"]


def test_one_step_per_clock_without_stalls(cores):
    """parallel: n steps take n clocks plus the pipeline; folded: its stated cycles per step."""
    art, d = cores["po2_h16"]
    x = np.zeros((1, 500, art.input_size), dtype=np.int64)
    r = run_stream(d, list(x), art, stalls=(100, 100))
    assert r["cycles"] <= 500 + 3
    art, d = cores["folded_h13_p4_w3_u5"]
    r = run_stream(d, list(np.zeros((1, 50, art.input_size), dtype=np.int64)), art, stalls=(100, 100))
    n, m = art.hidden_size, art.input_size
    assert r["cycles"] <= 50 * (-(-n // 4) * (n + m) + 4) + 80    # ceil(n/P)(n+m) + 4 per step


def test_verify_rtl_cli(cores, tmp_path, capsys):
    from qornn.cli import main

    art, d = cores["w8_shift0_last"]
    art_dir = save_artifact(art, tmp_path / "art")
    rc = main(["verify", str(art_dir), "--rtl", str(d), "--sequences", "6", "--length", "50", "--seed", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "rtl-verilator" in out and "bit-exact" in out, out
    other = save_artifact(cores["po2_h16"][0], tmp_path / "other")
    rc = main(["verify", str(other), "--rtl", str(d), "--sequences", "1", "--length", "3"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "different artifact" in err and "\n" not in err


def test_solver_is_recorded_and_keyed(cores):
    """The parallel cores name their solver in qornn_rtl.json and in the Verilog (so in the build
    cache key, which hashes the Verilog); alkaid's graph is smaller than the CSD trees."""
    from qornn.rtl import read_meta
    from qornn.rtl.verilator import build_key

    metas = {k: read_meta(cores[k][1]) for k in ("po2_h16", "po2_h16_csd", "w8_shift0_last_dc0")}
    alk, csd, dc0 = (metas[k]["stats"]["solver"] for k in ("po2_h16", "po2_h16_csd", "w8_shift0_last_dc0"))
    assert metas["po2_h16"]["options"]["solver"] == "auto" and metas["po2_h16_csd"]["options"]["solver"] == "csd"
    assert (alk["W"], alk["U"], alk["V"]) == ("alkaid",) * 3 and (csd["W"], csd["U"], csd["V"]) == ("csd",) * 3
    assert dc0["hard_dc"] == 0 and metas["w8_shift0_last_dc0"]["options"]["solver_dc"] == 0
    assert metas["po2_h16"]["stats"]["adders"] < 0.8 * metas["po2_h16_csd"]["stats"]["adders"]
    v = {k: (cores[k][1] / "qornn_core.v").read_text() for k in ("po2_h16", "po2_h16_csd")}
    assert "solver auto (W alkaid; U alkaid; V alkaid" in v["po2_h16"] and "solver csd" in v["po2_h16_csd"]
    assert build_key(v["po2_h16"], metas["po2_h16"]) != build_key(v["po2_h16_csd"], metas["po2_h16_csd"])


def test_a_wrong_core_is_caught(cores, tmp_path):
    """The core of an artifact with one recurrent weight changed by one LSB disagrees with the
    original's simulator (the comparison can fail), and equals its own."""
    art, _ = cores["po2_h16"]
    W = art.W.copy()
    W[2, 3] = W[2, 3] + 1 if W[2, 3] < 7 else W[2, 3] - 1
    bad = random_artifact(np.random.default_rng(4), **CASES["po2_h16"][1])
    bad.W = W
    d = write_rtl(bad.validate(), tmp_path / "bad")
    x = boundary_inputs(art, np.random.default_rng(3), 3, 80)
    y, h = run_rtl(d, x)
    assert np.array_equal(h, simulate(bad, x).hidden)
    assert not np.array_equal(h, simulate(art, x).hidden)


@pytest.mark.parametrize("kw, text", [
    (dict(arch="systolic"), "unknown architecture 'systolic'"),
    (dict(arch="parallel", lanes=2), "--lanes applies to the folded"),
    (dict(arch="folded", lanes=0), "--lanes must be a positive integer"),
    (dict(arch="folded", lanes=99), "exceeds the hidden size"),
    (dict(target="ice41"), "unknown target 'ice41'"),
    (dict(solver="greedy"), "unknown solver 'greedy'"),
    (dict(arch="folded", solver="alkaid"), "--solver / --solver-dc apply to the parallel"),
    (dict(solver="csd", solver_dc=0), "does not apply to --solver csd"),
    (dict(solver_dc=-2), "--solver-dc must be an integer >= -1"),
])
def test_bad_options_are_one_line(tmp_path, kw, text):
    art = random_artifact(np.random.default_rng(1), hidden=4, inputs=2, outputs=2)
    with pytest.raises(QornnError) as e:
        write_rtl(art, tmp_path / "r", **kw)
    assert text in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_qornn_rtl_cli_and_existing_dir(tmp_path, capsys):
    from qornn.cli import main

    art = random_artifact(np.random.default_rng(2), hidden=3, inputs=2, outputs=2)
    art_dir = save_artifact(art, tmp_path / "art")
    rc = main(["rtl", str(art_dir), "--out", str(tmp_path / "r"), "--arch", "folded", "--lanes", "2"])
    assert rc == 0 and "folded" in capsys.readouterr().out
    for f in ("qornn_core.v", "qornn_top.v", "qornn_rtl.json", "tb/harness.cpp", "tb/qornn_tb.h", "artifact/qornn.json"):
        assert (tmp_path / "r" / f).is_file(), f
    assert main(["rtl", str(art_dir), "--out", str(tmp_path / "r")]) == 2
    assert "already holds an earlier output" in capsys.readouterr().err
    for solver in ("csd", "alkaid"):
        rc = main(["rtl", str(art_dir), "--out", str(tmp_path / solver), "--solver", solver])
        assert rc == 0 and f"--solver {solver}" in capsys.readouterr().out
    assert main(["rtl", str(art_dir), "--out", str(tmp_path / "x"), "--solver", "magic"]) == 2
    assert "unknown solver 'magic'" in capsys.readouterr().err
    with pytest.raises(QornnError, match="input codes must lie"):
        run_rtl(tmp_path / "r", np.full((1, 2, 2), art.x_max + 1))
    with pytest.raises(QornnError, match="not a qornn RTL directory"):
        run_rtl(tmp_path / "art", np.zeros((1, 2, 2), dtype=np.int64))


def test_rtl_never_imports_torch(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from qornn.rtl import write_rtl, run_rtl
        from qornn.rtl.synth import synthesize, pnr_top
        from qornn.testing import random_artifact
        art = random_artifact(np.random.default_rng(5), hidden=3, inputs=2, outputs=2)
        write_rtl(art, {str(tmp_path / 'r')!r}, arch='folded', lanes=2)
        bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras'))
        print('IMPORTED:', bad)
        sys.exit(1 if bad else 0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0 and "IMPORTED: []" in proc.stdout, proc.stdout + proc.stderr


def test_synthesis_smoke(tmp_path):
    """The one synthesis case of the suite: a tiny parallel core through yosys and nextpnr-ice40;
    every figure comes from the tools' output."""
    from qornn.rtl.synth import synthesize

    art = random_artifact(np.random.default_rng(6), hidden=2, inputs=1, outputs=1, weight_bits=2, act_bits=4,
                          input_bits=4, output_bits=2, m_w=1, m_u=1)
    d = write_rtl(art, tmp_path / "r", target="ice40-hx8k")
    r = synthesize(d)
    assert "error" not in r, r
    assert r["LUT"] > 0 and r["FF"] > 0 and r["DSP"] == 0 and r["fits"] and r["routed"] and r["fmax_mhz"] > 0
    md = (d / "report.md").read_text()
    assert md.startswith("| quantity | value |")
    from qornn.export.costs import energy_per_step   # the estimate beside the figures, labelled as one
    assert r["energy_estimate_pj_per_step"] == energy_per_step(art, "logic")["integer_pj"]
    assert "estimate" in md and "not measured" in md


def test_rtl_out_may_not_overlap_the_artifact(tmp_path, capsys):
    from qornn.cli import main

    art = random_artifact(np.random.default_rng(8), hidden=2, inputs=1, outputs=1)
    art_dir = save_artifact(art, tmp_path / "art")
    assert main(["rtl", str(art_dir), "--out", str(art_dir / "core")]) == 2
    err = capsys.readouterr().err.strip()
    assert "overlaps the input" in err and "\n" not in err
    assert not (art_dir / "core").exists()
