"""Reading JSON that a user (or an attacker) may have edited, and typed access to its fields.

`json.loads` alone raises RecursionError on deeply nested input, ValueError on integers of more
than 4300 digits, and accepts NaN / Infinity; every qornn file goes through `read_json` instead,
so each of those becomes one QornnError line naming the file. `field` checks a value's type and
range and names its dotted path in the error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from qornn.errors import QornnError

MAX_JSON_BYTES = 64 << 20     # no qornn JSON file comes near this; a larger one is refused unread
MAX_DEPTH = 64                # qornn's own files nest at most ~5 deep


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _depth_ok(text: str, limit: int = MAX_DEPTH) -> bool:
    """Nesting depth of brackets outside strings, without recursion."""
    depth, in_str, esc = 0, False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def parse_json(text: str, where: str):
    """Parse JSON text; any defect is a one-line QornnError naming `where`."""
    if not _depth_ok(text):
        raise QornnError(f"{where}: JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise QornnError(f"{where}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise QornnError(f"{where}: not valid JSON ({str(e).splitlines()[0][:120]})") from None


def read_text(path, what: str = "file", max_bytes: int = MAX_JSON_BYTES) -> str:
    """A UTF-8 text file read whole, refused unread above `max_bytes`; every failure one line."""
    path = Path(path)
    try:
        if path.stat().st_size > max_bytes:
            size = f"{max_bytes >> 20} MiB" if max_bytes >= 1 << 20 else f"{max_bytes >> 10} KiB"
            raise QornnError(f"{path}: {what} larger than {size}; refusing to read it")
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise QornnError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise QornnError(f"{path}: expected a {what}, found a directory") from None
    except UnicodeDecodeError:
        raise QornnError(f"{path}: {what} is not UTF-8 text") from None
    except OSError as e:
        raise QornnError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def read_json(path, what: str = "file"):
    """Read and parse a JSON file (size-capped, depth-capped, no NaN/inf)."""
    return parse_json(read_text(path, what), str(path))


def read_jsonl(path, what: str = "file") -> list:
    """A JSON-lines file as a list of records (blank lines skipped)."""
    text = read_text(path, what)
    return [parse_json(line, f"{path} line {i}") for i, line in enumerate(text.splitlines(), 1) if line.strip()]


_MISSING = object()


def field(d, path: str, kind, lo=None, hi=None, where: str = "", default=_MISSING, choices=None):
    """The value at dotted `path` of nested dicts `d`, checked to be `kind` (int, float, str,
    bool, dict, list) and within [lo, hi] / `choices`; a defect names the path (and `where`)."""
    pre = f"{where}: " if where else ""
    cur = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            if default is not _MISSING:
                return default
            raise QornnError(f"{pre}field '{path}' is missing")
        cur = cur[part]
    ok = isinstance(cur, kind) and not (kind in (int, float) and isinstance(cur, bool))
    if kind is float and isinstance(cur, int) and not isinstance(cur, bool):
        try:
            cur, ok = float(cur), True
        except OverflowError:   # an integer beyond float range (e.g. 10**400 in a float field)
            raise QornnError(f"{pre}field '{path}' must be a finite number, got {_short(cur)}") from None
    if not ok:
        raise QornnError(f"{pre}field '{path}' must be {_kind_name(kind)}, got {_short(cur)}")
    if kind is float and not math.isfinite(cur):
        raise QornnError(f"{pre}field '{path}' must be finite, got {cur!r}")
    if (lo is not None and cur < lo) or (hi is not None and cur > hi):
        raise QornnError(f"{pre}field '{path}' must be in {lo}..{hi}, got {_short(cur)}")
    if choices is not None and cur not in choices:
        raise QornnError(f"{pre}field '{path}' must be one of {', '.join(map(str, choices))}, got {_short(cur)}")
    return cur


def _kind_name(kind) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            dict: "an object", list: "a list"}.get(kind, kind.__name__)


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."
