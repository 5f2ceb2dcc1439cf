"""Atomic outputs: --force swaps without a window of loss, crashes are recovered, nothing is
left behind, permissions follow the umask, and an output may not be one of the inputs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qornn import atomic
from qornn.errors import QornnError


def _fill(d: Path, text: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "payload.txt").write_text(text)
    return d


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("exchange", [True, False])
def test_force_replaces_and_leaves_nothing(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    out = _fill(tmp_path / "out", "old")
    with pytest.raises(QornnError, match="--force"):
        atomic.prepare_dir(out, force=False)
    tmp = atomic.prepare_dir(out, force=True)
    _fill(tmp, "new")
    atomic.commit_dir(tmp, out)
    assert (out / "payload.txt").read_text() == "new"
    assert _leftovers(tmp_path) == []


_KILL_BETWEEN_RENAMES = """
import os, sys
from pathlib import Path
from qornn import atomic
atomic._exchange = lambda a, b: False
real = os.replace
calls = []
def replace(a, b):
    real(a, b)
    calls.append(1)
    if len(calls) == 1:
        os.kill(os.getpid(), 9)     # SIGKILL between the two renames of the fallback
os.replace = replace
out = Path(sys.argv[1])
tmp = atomic.prepare_dir(out, force=True)
(tmp / "payload.txt").write_text("new")
atomic.commit_dir(tmp, out)
"""


def test_sigkill_between_the_fallback_renames_is_recovered(tmp_path):
    out = _fill(tmp_path / "out", "old")
    proc = subprocess.run([sys.executable, "-c", _KILL_BETWEEN_RENAMES, str(out)])
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()                      # the one moment of the fallback: old moved away...
    assert any(".replace-journal" in n for n in _leftovers(tmp_path))   # ...but journaled
    atomic.recover(out)                          # the next run (prepare_dir calls it) finishes the swap
    assert (out / "payload.txt").read_text() == "new"
    atomic.clean_stale(out)
    assert _leftovers(tmp_path) == []


def test_stale_temps_of_dead_processes_are_removed(tmp_path):
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = [tmp_path / f".out.tmp-{dead}-abc", tmp_path / f".out.old-{dead}-def"]
    for d in stale:
        _fill(d, "junk")
    live = _fill(tmp_path / f".out.tmp-{os.getpid()}-live", "mine")   # a live process's temp stays
    other = _fill(tmp_path / ".notes.tmp-1-x", "not ours")               # another output's name stays
    tmp = atomic.prepare_dir(out)
    assert not any(d.exists() for d in stale) and live.exists() and other.exists()
    atomic.commit_dir(tmp, out)


def test_umask_is_respected(tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "out"
        tmp = atomic.prepare_dir(out)
        atomic.commit_dir(tmp, out)
        f = tmp_path / "file.bin"
        atomic.write_bytes_atomic(f, b"x")
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o750
    assert (f.stat().st_mode & 0o777) == 0o640


def test_current_directory_is_never_an_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out in (".", "..", str(tmp_path), str(tmp_path.parent)):
        with pytest.raises(QornnError, match="current directory"):
            atomic.prepare_dir(out, force=True)
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path.parent) == _leftovers(tmp_path.parent)


def test_overlap_with_inputs_refused(tmp_path):
    run = _fill(tmp_path / "run", "weights")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(run / "payload.txt")
    for out in (run, tmp_path, run / "payload.txt", run / "sub"):
        with pytest.raises(QornnError, match="overlaps"):
            atomic.refuse_overlap(out, [run])
    with pytest.raises(QornnError, match="not a regular file"):
        atomic.refuse_overlap(fifo, [])
    with pytest.raises(QornnError, match="symbolic link"):
        atomic.refuse_overlap(link, [])
    atomic.refuse_overlap(tmp_path / "elsewhere", [run])


def _qornn(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "qornn.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from qornn.cli import main

    d = tmp_path_factory.mktemp("atomic")
    assert main(["train", "--task", "copy", "--length", "25", "--hidden", "8", "--steps", "0",
                 "--out", str(d / "run")]) == 0
    return d / "run"


def test_export_force_survives_sigkill_at_any_moment(tiny_run, tmp_path):
    """Generated fault injection: `qornn export --force` over an existing artifact, killed after
    random delays. Afterwards the artifact is always a complete artifact (the old one or the new
    one, never missing or partial), and the next export leaves no temp behind."""
    from qornn.cli import main
    from qornn.export.artifact import load_artifact

    art = tmp_path / "art"
    assert main(["export", str(tiny_run), "--act-bits", "6", "--out", str(art)]) == 0
    hashes = {load_artifact(art).content_hash()}
    rng = np.random.default_rng(0)
    t_full = time.perf_counter()
    p = _qornn("export", tiny_run, "--act-bits", "7", "--out", art, "--force")
    assert p.wait() == 0
    t_full = time.perf_counter() - t_full
    hashes.add(load_artifact(art).content_hash())
    for delay in rng.uniform(0.2, 1.0, size=6) * t_full:
        bits = int(rng.choice([6, 7]))
        p = _qornn("export", tiny_run, "--act-bits", bits, "--out", art, "--force")
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        atomic.recover(art)   # what the next qornn run does first
        assert load_artifact(art).content_hash() in hashes
    assert main(["export", str(tiny_run), "--act-bits", "6", "--out", str(art), "--force"]) == 0
    assert _leftovers(tmp_path) == []


def test_export_into_its_own_run_refused(tiny_run, capsys):
    from qornn.cli import main

    assert main(["export", str(tiny_run), "--out", str(tiny_run), "--force"]) == 2
    assert "overlaps the input" in capsys.readouterr().err
    assert (tiny_run / "config.json").is_file()


def test_demo_never_replaces_user_directories(tmp_path, capsys):
    from qornn.cli import main

    mine = tmp_path / "mine"
    _fill(mine / "run", "my own run")
    assert main(["demo", "--out", str(mine), "--steps", "1"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (mine / "run" / "payload.txt").read_text() == "my own run"
