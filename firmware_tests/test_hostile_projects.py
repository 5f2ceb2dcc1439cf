"""Hostile firmware projects (the hardening classes of the hls stage), generated per class:

* trust boundary of `qornn verify ART --hls PRJ`: nothing in PRJ runs (no build_lib.sh, no shared
  library); any change to its firmware is refused naming the file;
* corrupted qornn_hls.json / hls4ml_config.yml: every key deleted, retyped, out of range, unknown
  keys, random bytes, truncations, nesting bombs, YAML tags and aliases: one line naming the field;
* `qornn hls --build` without Vitis / Vivado: refused before anything is written;
* Ctrl-C during a compile (hls --compile, a cache build under verify --hls): exit 130, no g++
  left, nothing half-built, and a re-run succeeds.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from qornn.cli import main
from qornn.errors import QornnError
from qornn.export.artifact import save_artifact
from qornn.hls.project import read_config, read_meta
from qornn.testing import random_artifact

def _one_line(e) -> str:
    msg = str(e.value if hasattr(e, "value") else e)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.fixture()
def user_prj(projects, tmp_path):
    """A user's copy of the cached 'tiny' project (as `qornn hls` writes it) and its artifact dir."""
    art, prj = projects["tiny"]
    user = Path(shutil.copytree(prj, tmp_path / "prj"))
    for junk in ("qornn_csim.json", "qornn_stream_driver.cpp"):
        (user / junk).unlink(missing_ok=True)
    for so in (user / "firmware").glob("*.so"):
        so.unlink()
    return art, save_artifact(art, tmp_path / "art"), user, prj


# -- 1. trust boundary of verify --hls -----------------------------------------------------
def test_verify_hls_runs_nothing_from_the_project(user_prj, tmp_path, capsys):
    """A planted library and a build_lib.sh that would leave a marker: verify simulates qornn's own
    cached build (the project's firmware equals it), loads no .so of PRJ and runs no script."""
    from qornn.hls.csim import library_path

    art, art_dir, user, ref = user_prj
    marker = tmp_path / "PWNED"
    planted = library_path(user)
    planted.write_bytes(b"\x7fELF this is not a library")          # dlopen would fail on it
    (user / "qornn_csim.json").write_text(json.dumps({"library": planted.name, "compiled_in": str(user.resolve())}))
    rc = main(["verify", str(art_dir), "--hls", str(user), "--sequences", "3", "--length", "20"])
    out = capsys.readouterr()
    assert rc == 0 and "bit-exact" in out.out, out
    assert planted.read_bytes().startswith(b"\x7fELF this")         # untouched, never replaced
    # an edited build script is refused, and never run
    with open(user / "build_lib.sh", "a") as f:
        f.write(f"\ntouch {marker}\n")
    rc = main(["verify", str(art_dir), "--hls", str(user), "--sequences", "1", "--length", "5"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "build_lib.sh differs" in err and "\n" not in err and not marker.exists()


def _mutations(user: Path):
    """(file, kind) for every file of the project that defines the function, plus a sample of
    the bundled ap_types / nnet_utils headers."""
    files = sorted(p.relative_to(user).as_posix() for p in user.rglob("*") if p.is_file())
    lib = [f for f in files if "/ap_types/" in f or "/nnet_utils/" in f]
    own = [f for f in files if f not in lib and f not in ("qornn_hls.json", "hls4ml_config.yml")]
    picked = own + lib[:: max(1, len(lib) // 12)]
    kinds = ["flip", "append", "truncate", "delete", "symlink"]
    cases = [(f, kinds[i % len(kinds)]) for i, f in enumerate(picked)] + [(f, "flip") for f in own]
    return [(f, "append" if f == "build_lib.sh" and k in ("flip", "truncate") else k) for f, k in cases]


def test_verify_hls_refuses_every_edited_file(user_prj, tmp_path):
    """Every firmware / build / testbench / artifact file, edited five ways (a byte flipped, a line
    appended, truncated, deleted, replaced by a link to the same bytes): refused, naming it."""
    from qornn.hls.trust import trusted_project

    art, _, user, ref = user_prj
    cases = _mutations(user)
    assert len(cases) > 40
    for rel, kind in cases:
        path = user / rel
        original = path.read_bytes()
        if kind == "flip":
            data = bytearray(original or b"\0")
            data[len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))
        elif kind == "append":
            path.write_bytes(original + b"\n#include \"/etc/passwd\"\n")
        elif kind == "truncate":
            path.write_bytes(original[: len(original) // 2] if original else b"x")
        elif kind == "delete":
            path.unlink()
        elif kind == "symlink":
            keep = tmp_path / "same_bytes"
            keep.write_bytes(original)
            path.unlink()
            path.symlink_to(keep)
        with pytest.raises(QornnError) as e:
            trusted_project(art, user)
        msg = _one_line(e)
        assert rel in msg, (rel, kind, msg)
        path.unlink(missing_ok=True)
        path.write_bytes(original)
    assert trusted_project(art, user) == ref    # restored: accepted again


@pytest.mark.parametrize("rel", ["firmware/evil.h", "firmware/weights/extra.txt", "firmware/nnet_utils/x.h"])
def test_verify_hls_refuses_extra_firmware_files(user_prj, rel):
    from qornn.hls.trust import trusted_project

    art, _, user, _ = user_prj
    (user / rel).write_text("#define EVIL 1\n")
    with pytest.raises(QornnError, match="is not part of the generated firmware") as e:
        trusted_project(art, user)
    assert rel in _one_line(e)


@pytest.mark.parametrize("key, value", [("options.reuse_factor", 2), ("options.part", "xc7z020clg400-1"),
                                        ("versions.hls4ml", "0.0.1"), ("csim_exact", False)])
def test_verify_hls_refuses_a_description_that_does_not_match(user_prj, key, value):
    from qornn.hls.trust import trusted_project

    art, _, user, _ = user_prj
    meta = json.loads((user / "qornn_hls.json").read_text())
    a, b = key.split(".") if "." in key else (key, None)
    if b:
        meta[a][b] = value
    else:
        meta[a] = value
    (user / "qornn_hls.json").write_text(json.dumps(meta))
    with pytest.raises(QornnError) as e:
        trusted_project(art, user)
    msg = _one_line(e)
    assert any(name in msg for name in (key.split(".")[-1], "ReuseFactor", "Part")), msg


# -- 2. corrupted qornn_hls.json / hls4ml_config.yml ---------------------------------------
def _leaves(d, prefix=()):
    for k, v in d.items():
        yield prefix + (k,), v
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))


def _wrong_values(v):
    if isinstance(v, bool):
        return [1, "true", None, []]
    if isinstance(v, int):
        return ["7", None, 1.5, True, [], -1, 2**70, 10**400]
    if isinstance(v, float):
        return ["5", None, True, -1.0, 1e308]
    if isinstance(v, str):
        return [None, 7, [], {}, True]
    if isinstance(v, list):
        return [{}, "x", None, [[]]]
    if isinstance(v, dict):
        return [[], "x", None, 3]
    return ["x"]


def _set(d, path, value, delete=False):
    d = copy.deepcopy(d)
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    if delete:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


def _json_variants(meta: dict):
    """(name, text, the field the error must name or None) for many corruptions."""
    out = []
    for path, v in _leaves(meta):
        name = ".".join(path)
        out.append((f"delete {name}", json.dumps(_set(meta, path, None, delete=True)), path[-1]))
        for i, w in enumerate(_wrong_values(v)):
            if path[-1] == "clock_period" and w == 1.5:
                continue               # a valid clock period
            if path == ("version",) or (path == ("format",)):
                expect = None
            elif isinstance(v, int) and not isinstance(v, bool) and isinstance(w, int) and not isinstance(w, bool) \
                    and w == 10**400:
                expect = None          # refused by the JSON reader (integer too long)
            else:
                expect = path[-1]
            text = json.dumps(_set(meta, path, w)) if w != 10**400 else \
                json.dumps(_set(meta, path, 0)).replace(f'"{path[-1]}": 0', f'"{path[-1]}": {10**400}')
            out.append((f"{name}={w!r:.20}#{i}", text, expect))
    for path, v in _leaves(meta):
        if isinstance(v, dict):
            out.append((f"unknown in {'.'.join(path)}", json.dumps(_set(meta, path + ("zz_extra",), 1)), "zz_extra"))
    out.append(("unknown top", json.dumps(meta | {"zz_extra": 1}), "zz_extra"))
    base = json.dumps(meta)
    rng = np.random.default_rng(0)
    for i in range(8):
        out.append((f"random bytes {i}", rng.integers(0, 256, size=int(rng.integers(1, 400)), dtype=np.uint8).tobytes(), None))
    for cut in (0, 1, 17, len(base) // 2, len(base) - 1):
        out.append((f"truncated at {cut}", base[:cut], None))
    out += [("nesting bomb", "[" * 100000 + "]" * 100000, None),
            ("object bomb", '{"a":' * 50000 + "1" + "}" * 50000, None),
            ("huge int", base.replace('"version": 2', '"version": ' + "9" * 5000), None),
            ("NaN", base.replace('"clock_period": 5', '"clock_period": NaN'), None),
            ("non-UTF-8", base.encode().replace(b"qornn_core", b"qornn_\xff\xfe"), None),
            ("a list", "[1, 2]", None), ("a string", '"qornn"', None), ("null", "null", None),
            ("empty", "", None), ("BOM", "\ufeff" + base, None)]
    return out


def test_corrupt_project_descriptions(projects, tmp_path):
    """Hundreds of corrupted qornn_hls.json: read_meta refuses each with one line naming the field."""
    _, prj = projects["tiny"]
    meta = json.loads((prj / "qornn_hls.json").read_text())
    user = tmp_path / "prj"
    user.mkdir()
    variants = _json_variants(meta)
    assert len(variants) > 250
    for name, text, expect in variants:
        data = text.encode() if isinstance(text, str) else text
        (user / "qornn_hls.json").write_bytes(data)
        with pytest.raises(QornnError) as e:
            read_meta(user)
        msg = _one_line(e)
        assert "qornn_hls.json" in msg, (name, msg)
        if expect is not None:
            assert expect in msg, (name, msg)


def _yaml_variants(cfg: dict, marker: Path):
    out = []
    for path, v in _leaves(cfg):
        name = ".".join(path)
        shapes = path[0] in ("InputShapes", "OutputShapes") and len(path) > 1
        if path[-1] != "WriteEmulationConstants":     # optional (Vivado writes none)
            out.append((f"delete {name}", yaml.safe_dump(_set(cfg, path, None, delete=True)),
                        path[-2] if shapes else path[-1]))
        for i, w in enumerate(_wrong_values(v)):
            if w == 10**400 or (path[-1] == "ClockPeriod" and w == 1.5):
                continue
            if path[-1] in ("InputData", "OutputDir", "OutputPredictions", "ClockUncertainty", "Version",
                            "PipelineStyle", "Namespace") and isinstance(w, str):
                continue  # free-form strings
            if path[-1] == "Namespace" and w is None:
                continue
            out.append((f"{name}={w!r:.20}#{i}", yaml.safe_dump(_set(cfg, path, w)), path[-1]))
    for path, v in _leaves(cfg):
        if isinstance(v, dict) and path[0] not in ("InputShapes", "OutputShapes"):
            out.append((f"unknown in {'.'.join(path)}", yaml.safe_dump(_set(cfg, path + ("ZzExtra",), 1)), "ZzExtra"))
    out.append(("unknown top", yaml.safe_dump(cfg | {"ZzExtra": 1}), "ZzExtra"))
    for stamp in ("../../../tmp/evil", "/etc/passwd", "ABCDEFGH", "1234567", ""):
        out.append((f"stamp {stamp}", yaml.safe_dump(cfg | {"Stamp": stamp}), "Stamp"))
    base = yaml.safe_dump(cfg)
    rng = np.random.default_rng(1)
    for i in range(8):
        out.append((f"random bytes {i}", rng.integers(0, 256, size=int(rng.integers(1, 400)), dtype=np.uint8).tobytes(), None))
    for cut in (0, 1, 9, len(base) // 3, len(base) // 2):
        out.append((f"truncated at {cut}", base[:cut], None))
    lines = "\n".join(f"l{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 30))
    out += [("python tag", f"!!python/object/apply:os.system ['touch {marker}']\n", None),
            ("python tag in a value", base + f"Evil: !!python/object/apply:os.system ['touch {marker}']\n", None),
            ("keras tag", base.replace("Version:", "Version: !keras_model x\nV2:"), None),
            ("binary tag", base.replace("Part:", "Part: !!binary aGVsbG8=\nP2:"), None),
            ("local tag", "!foo\n" + base, None),
            ("alias bomb", "l0: &a0 [x]\n" + lines + "\n", None),
            ("anchor", base.replace("Backend: Vitis", "Backend: &b Vitis\nB2: *b"), None),
            ("deep flow nesting", "[" * 5000 + "]" * 5000, None), ("deep block nesting",
                                                                 "".join(" " * i + "a:\n" for i in range(200)), None),
            ("a list", "- 1\n- 2\n", None), ("a scalar", "qornn\n", None), ("null", "~\n", None),
            ("empty", "", None), ("non-UTF-8", base.encode().replace(b"Vitis", b"Vi\xfftis"), None),
            ("huge", "a: " + "x" * (2 << 20), None), ("duplicate-ish junk", "{a: 1, a: [}", None)]
    return out


def test_corrupt_hls4ml_configs(projects, tmp_path):
    """Hundreds of corrupted hls4ml_config.yml: read_config refuses each with one line (naming the
    field where one is at fault); no YAML tag constructs anything."""
    _, prj = projects["tiny"]
    user = tmp_path / "prj"
    user.mkdir()
    shutil.copy(prj / "qornn_hls.json", user / "qornn_hls.json")
    cfg = yaml.safe_load((prj / "hls4ml_config.yml").read_text())
    marker = tmp_path / "PWNED"
    variants = _yaml_variants(cfg, marker)
    assert len(variants) > 150
    for name, text, expect in variants:
        data = text.encode() if isinstance(text, str) else text
        (user / "hls4ml_config.yml").write_bytes(data)
        with pytest.raises(QornnError) as e:
            read_config(user)
        msg = _one_line(e)
        assert "hls4ml_config.yml" in msg, (name, msg)
        if expect is not None:
            assert expect in msg, (name, msg)
    assert not marker.exists()


@pytest.mark.parametrize("which", ["json-delete-options", "json-bomb", "yml-tag", "yml-list", "yml-stamp"])
def test_corrupt_projects_through_the_cli_and_compile(user_prj, capsys, which):
    """The same refusals through `qornn verify --hls` (exit 2, one line) and compile_project
    (before any g++: no library appears)."""
    from qornn.hls import compile_project

    art, art_dir, user, _ = user_prj
    meta_p, yml_p = user / "qornn_hls.json", user / "hls4ml_config.yml"
    if which == "json-delete-options":
        meta = json.loads(meta_p.read_text())
        del meta["options"]
        meta_p.write_text(json.dumps(meta))
    elif which == "json-bomb":
        meta_p.write_text("[" * 200000)
    elif which == "yml-tag":
        yml_p.write_text("!!python/object/apply:os.system ['false']\n")
    elif which == "yml-list":
        yml_p.write_text("- a\n- b\n")
    else:
        yml_p.write_text(yml_p.read_text().replace("Stamp: ", "Stamp: ../../x").replace("../../x", "../../x", 1))
    rc = main(["verify", str(art_dir), "--hls", str(user), "--sequences", "1", "--length", "4"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("qornn: error: ") and "\n" not in err, err
    with pytest.raises(QornnError) as e:
        compile_project(user)
    _one_line(e)
    assert not list((user / "firmware").glob("*.so")) and not list((user / "firmware").glob(".*tmp*"))


# -- 3. --build without Vitis / Vivado ------------------------------------------------------
def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.mark.parametrize("backend", ["Vitis", "vivado", "VITIS"])
@pytest.mark.parametrize("io_type", ["io_stream", "io_parallel"])
@pytest.mark.parametrize("out", ["new", "nested/deeper/new", "existing-force"])
def test_build_without_the_tools_writes_nothing(tmp_path, capsys, monkeypatch, backend, io_type, out):
    art = random_artifact(np.random.default_rng(81), hidden=3, inputs=2, outputs=2)
    art_dir = save_artifact(art, tmp_path / "art")
    extra = []
    if out == "existing-force":
        existing = tmp_path / out
        existing.mkdir()
        (existing / "qornn_hls.json").write_text("{}")
        extra = ["--force"]
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    before = _tree(tmp_path)
    rc = main(["hls", str(art_dir), "--out", str(tmp_path / out), "--backend", backend, "--io-type", io_type,
               "--max-length", "8", "--build", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "HLS not found on PATH" in err and "\n" not in err, err
    assert _tree(tmp_path) == before                       # no project, no temp dir, no parent dirs
    if out == "existing-force":
        assert (tmp_path / out / "qornn_hls.json").read_text() == "{}"


# -- 4. Ctrl-C during a compile ---------------------------------------------------------------
def _children_named(pid: int, names=("g++", "cc1plus", "as", "ld", "collect2")) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if comm in names and ppid == pid:
            found.append(int(d.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _group_alive(pgid: int) -> bool:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


@pytest.mark.parametrize("io_type", ["io_stream", "io_parallel"])
@pytest.mark.parametrize("command", ["hls-compile", "verify-hls"])
def test_ctrl_c_during_a_compile(tmp_path, io_type, command):
    art = random_artifact(np.random.default_rng(90 + len(io_type)), hidden=5, inputs=2, outputs=2)
    art_dir = save_artifact(art, tmp_path / "art")
    cache = tmp_path / "cache"                       # a fresh cache: the build cannot be a hit
    env = {**os.environ, "QORNN_CACHE": str(cache)}
    prj = tmp_path / "prj"
    qornn = [sys.executable, "-m", "qornn.cli"]
    hls = [*qornn, "hls", str(art_dir), "--out", str(prj), "--io-type", io_type, "--max-length", "8"]
    if command == "hls-compile":
        argv = [*hls, "--compile"]
    else:
        assert subprocess.run(hls, env=env, capture_output=True).returncode == 0
        argv = [*qornn, "verify", str(art_dir), "--hls", str(prj), "--sequences", "2", "--length", "6"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    gxx = []
    while not gxx and time.time() < deadline and proc.poll() is None:
        gxx = _children_named(proc.pid, ("g++",))
        time.sleep(0.02)
    assert gxx, f"g++ never started: {proc.communicate()}"
    time.sleep(0.3)                                  # let cc1plus get going
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert err.strip() == "qornn: interrupted"
    time.sleep(0.1)
    assert not _alive(gxx[0]) and not _group_alive(gxx[0])
    # nothing half-built: no library, no temp file, not marked ready; the cache holds no entry
    if prj.exists():
        fw = prj / "firmware"
        assert not list(fw.glob("*.so")) and not list(fw.glob(".*")) and not (prj / "qornn_csim.json").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prj")]
    if cache.exists():
        assert all(p.name.endswith(".lock") for p in (cache / "hls").iterdir()), list((cache / "hls").iterdir())
    # a later run builds cleanly
    if command == "hls-compile":
        again = subprocess.run([*hls, "--compile", "--force"], env=env, capture_output=True, text=True)
        assert again.returncode == 0 and "C-simulation library" in again.stdout, again.stderr
    else:
        again = subprocess.run(argv, env=env, capture_output=True, text=True)
        assert again.returncode == 0 and "bit-exact" in again.stdout, again.stdout + again.stderr
