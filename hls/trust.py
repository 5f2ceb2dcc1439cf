"""`qornn verify ART --hls PRJ`: a project directory is untrusted input.

The verifier never runs anything from PRJ (no build_lib.sh, no shared library, no compile of its
sources). It reads PRJ's qornn_hls.json (strictly validated), takes qornn's own project for the
same artifact and options from the content-hash cache (generating and compiling it with qornn's
fixed g++ command on a miss), and requires PRJ's files to equal that project's byte for byte:
every generated source, header, weight file, build script, testbench file and the artifact copy;
build_lib.sh up to its LIB_STAMP line, hls4ml_config.yml up to the three paths and the stamp
that name where it was written, qornn_hls.json field for field. No file beyond qornn's own may
appear under firmware/ (compiled libraries aside). C-simulation then runs qornn's cached build,
which is therefore the very firmware PRJ holds; a differing project is refused with one line
naming the first differing file.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from qornn.errors import QornnError

from .project import PROJECT_FILE, read_config, read_meta

# Not compared byte for byte: location / stamp dependent (compared below), or build products.
_SPECIAL = {PROJECT_FILE, "hls4ml_config.yml", "build_lib.sh"}
_PRODUCTS = {"qornn_csim.json", "qornn_stream_driver.cpp"}
_STAMP_LINE = re.compile(rb"^LIB_STAMP=[0-9a-f]{8}$", re.MULTILINE)
_LOCATION_KEYS = ("OutputDir", "InputData", "OutputPredictions", "Stamp")
MAX_FILE = 256 << 20


def _files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return out


def _read(prj: Path, rel: str) -> bytes:
    path = prj / rel
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise QornnError(f"{prj} differs from the project qornn generates for this artifact and options: "
                         f"{rel} is missing; regenerate it with `qornn hls`") from None
    except OSError as e:
        raise QornnError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise QornnError(f"{path} is not a regular file (a link, directory or device); refusing the project")
    if st.st_size > MAX_FILE:
        raise QornnError(f"{path}: larger than {MAX_FILE >> 20} MiB; refusing the project")
    try:
        return path.read_bytes()
    except OSError as e:
        raise QornnError(f"{path}: cannot read ({e.strerror or e})") from None


def _differs(prj: Path, rel: str, why: str = "") -> QornnError:
    return QornnError(f"{prj} differs from the project qornn generates for this artifact and options: "
                      f"{rel} {why or 'differs'} (hand-edited firmware is not verified; regenerate it with `qornn hls`)")


def _first_diff(a, b, prefix: str = "") -> str | None:
    """Dotted path of the first difference between two parsed files (None: equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(b) + [k for k in a if k not in b]:
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                return name
            sub = _first_diff(a[key], b[key], name)
            if sub:
                return sub
        return None
    if type(a) is not type(b) or a != b:
        return prefix or "(root)"
    return None


def compare_project(prj: Path, ref: Path, meta: dict) -> None:
    """Refuse `prj` unless it holds exactly the firmware of qornn's own project `ref`."""
    ref_meta = read_meta(ref)
    bad = _first_diff(meta, ref_meta)
    if bad:
        raise _differs(prj, PROJECT_FILE, f"field '{bad}' differs")
    cfg, ref_cfg = read_config(prj, meta), read_config(ref, ref_meta)
    bad = _first_diff({k: v for k, v in cfg.items() if k not in _LOCATION_KEYS},
                      {k: v for k, v in ref_cfg.items() if k not in _LOCATION_KEYS})
    if bad:
        raise _differs(prj, "hls4ml_config.yml", f"field '{bad}' differs")
    ref_files = [f for f in _files(ref) if f not in _SPECIAL and f not in _PRODUCTS
                 and not (f.startswith("firmware/") and f.endswith(".so"))]
    for rel in ref_files:
        if _read(prj, rel) != _read(ref, rel):
            raise _differs(prj, rel)
    if _STAMP_LINE.sub(b"", _read(prj, "build_lib.sh")) != _STAMP_LINE.sub(b"", _read(ref, "build_lib.sh")):
        raise _differs(prj, "build_lib.sh")
    known = set(ref_files)
    firmware = prj / "firmware"
    if firmware.is_dir() and not firmware.is_symlink():
        for rel in ("firmware/" + f for f in _files(firmware)):
            if rel not in known and not (rel.count("/") == 1 and rel.endswith(".so")):
                raise _differs(prj, rel, "is not part of the generated firmware")


def trusted_project(art, prj_dir) -> Path:
    """qornn's own compiled project (from the cache) whose firmware equals PRJ_DIR's; refuses a
    project generated from another artifact, by another qornn / hls4ml, or edited by hand."""
    from .cache import cached_project
    from .csim import _check_artifact
    from .options import validate_options

    prj = Path(prj_dir)
    meta = read_meta(prj)
    _check_artifact(meta, art)
    read_config(prj, meta)
    opts = validate_options(art, **meta["options"])
    ref = cached_project(art, **opts.as_dict())
    if prj.resolve() != ref.resolve():
        compare_project(prj, ref, meta)
    return ref
