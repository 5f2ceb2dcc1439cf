"""`qornn simulate` streams its input in blocks: same integers as one `simulate` call, bounded
memory, outputs that appear whole or not at all."""

import os
import subprocess
import sys

import numpy as np
import pytest

from qornn import simfiles
from qornn.cli import main
from qornn.export.artifact import save_artifact
from qornn.export.simulator import simulate
from qornn.testing import boundary_inputs, random_artifact


def _art(tmp_path, **kw):
    art = random_artifact(np.random.default_rng(kw.pop("seed", 0)), **kw)
    return art, save_artifact(art, tmp_path / "art")


CASES = [  # budget bytes (small: many blocks), batch, length, output mode, input form
    (1 << 30, 3, 40, "every_step", "int64"),        # one block
    (3000, 5, 37, "every_step", "int16"),           # time blocks inside each sequence
    (4000, 9, 13, "last_step", "int64"),            # several whole sequences per block
    (700, 2, 29, "last_step", "float32"),           # real inputs, quantized per block
    (2000, 4, 31, "every_step", "fortran"),         # a Fortran-order file
    (2000, 3, 17, "every_step", ">i8"),             # big-endian codes
]


@pytest.mark.parametrize("budget, B, T, mode, form", CASES)
def test_streamed_equals_one_call(tmp_path, monkeypatch, capsys, budget, B, T, mode, form):
    monkeypatch.setattr(simfiles, "STREAM_BYTES", budget)
    art, art_dir = _art(tmp_path, hidden=7, inputs=3, outputs=2, output_mode=mode)
    x = boundary_inputs(art, np.random.default_rng(B * T), B, T)
    if form == "float32":
        x = (x * art.input_scale * 1.3).astype(np.float32)
    elif form == "fortran":
        x = np.asfortranarray(x)
    elif form != "int64":
        x = x.astype(form)
    np.save(tmp_path / "x.npy", x)
    per_step = 3 * (x.dtype.itemsize + 8) + (8 * 2 if mode == "every_step" else 0) + 8 * 7
    rows, steps = simfiles.plan_blocks(B, T, per_step, budget)
    assert (rows, steps) != (B, T) or budget > 1 << 20      # the small budgets really cut the input
    ref = simulate(art, x)
    for real in (False, True):
        y, h = tmp_path / f"y{real}.npy", tmp_path / f"h{real}.npy"
        argv = ["simulate", str(art_dir), "--input", str(tmp_path / "x.npy"), "--out", str(y), "--hidden-out", str(h)]
        assert main(argv + (["--real"] if real else [])) == 0
        got_y, got_h = np.load(y), np.load(h)
        if real:
            assert got_y.dtype == got_h.dtype == np.float64
            assert np.array_equal(got_y, ref.output_real) and np.array_equal(got_h, ref.hidden_real)
        else:
            assert got_y.dtype == got_h.dtype == np.int64
            assert np.array_equal(got_y, ref.output) and np.array_equal(got_h, ref.hidden)
    assert "wrote" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]     # no temps left


def test_plan_blocks():
    assert simfiles.plan_blocks(10, 100, 8, 8000) == (10, 100)
    assert simfiles.plan_blocks(10, 100, 8, 1600) == (2, 100)
    assert simfiles.plan_blocks(10, 100, 8, 799) == (1, 99)
    assert simfiles.plan_blocks(1, 10**7, 1000, 64 << 20) == (1, 67108)
    assert simfiles.plan_blocks(3, 5, 10**9, 1) == (1, 1)


def _files(d):
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def test_force_and_nothing_written_on_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(simfiles, "STREAM_BYTES", 500)
    art, art_dir = _art(tmp_path, hidden=5, inputs=2, outputs=2)
    x = boundary_inputs(art, np.random.default_rng(1), 2, 40).astype(np.float64) * art.input_scale
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "y.npy").write_bytes(b"keep me")
    base = ["simulate", str(art_dir), "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy")]
    assert main(base) == 2                                      # exists: not replaced without --force
    assert (tmp_path / "y.npy").read_bytes() == b"keep me"
    # a NaN in the last block: the run fails after earlier blocks were written to the temps
    bad = x.copy()
    bad[-1, -1, -1] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    before = _files(tmp_path)
    argv = ["simulate", str(art_dir), "--input", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "y.npy"),
            "--hidden-out", str(tmp_path / "h.npy"), "--force"]
    assert main(argv) == 2
    assert _files(tmp_path) == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    # a failure while writing --hidden-out leaves --out as it was
    from qornn import npyio

    real_write = npyio.NpyOutput.write

    def failing(self, index, block):
        if self.path.name == "h.npy" and index[1] > 0:
            raise OSError(28, "No space left on device", str(self.tmp))
        real_write(self, index, block)

    monkeypatch.setattr(npyio.NpyOutput, "write", failing)
    argv[3] = str(tmp_path / "x.npy")
    assert main(argv) == 2
    assert _files(tmp_path) == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(npyio.NpyOutput, "write", real_write)
    assert main(argv) == 0                                      # --force replaces the old file
    assert np.array_equal(np.load(tmp_path / "y.npy"), simulate(art, x).output)


# The child's own peak: VmHWM of /proc/self/status. (Not ru_maxrss: on Linux it keeps the
# high-water mark of the forked parent's memory across exec, so it reports pytest's size.)
PEAK_RSS = """
import sys
from qornn import simfiles
simfiles.STREAM_BYTES = 1 << 20
from qornn.cli import main
rc = main(sys.argv[1:])
print([ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0])   # kB
sys.exit(rc)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_peak_memory_does_not_grow_with_the_input(tmp_path):
    """Peak RSS for an input 20x longer grows by far less than that input (old code: ~4.3x it)."""
    art, art_dir = _art(tmp_path, hidden=16, inputs=10, outputs=10)
    peaks = {}
    for T in (10_000, 200_000):
        x = np.random.default_rng(T).integers(-art.x_max, art.x_max + 1, size=(1, T, 10))
        np.save(tmp_path / f"x{T}.npy", x)
        p = subprocess.run([sys.executable, "-c", PEAK_RSS, "simulate", str(art_dir), "--input",
                            str(tmp_path / f"x{T}.npy"), "--out", str(tmp_path / f"y{T}.npy"),
                            "--hidden-out", str(tmp_path / f"h{T}.npy")], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        peaks[T] = int(p.stdout.split()[-1]) * 1024
        if T == 10_000:
            ref = simulate(art, x)
            assert np.array_equal(np.load(tmp_path / f"h{T}.npy"), ref.hidden)
            assert np.array_equal(np.load(tmp_path / f"y{T}.npy"), ref.output)
    big = (tmp_path / "x200000.npy").stat().st_size + (tmp_path / "h200000.npy").stat().st_size
    assert big > 40e6
    assert peaks[200_000] - peaks[10_000] < 8e6, peaks      # the 40 MB of data never all in memory
    os.remove(tmp_path / "h200000.npy")
