"""Strict readers of the two files of a firmware project that qornn reads back: qornn_hls.json
(the project description) and hls4ml_config.yml (hls4ml's configuration).

A project directory is the user's input, so each file is validated completely before any value
is used: exact key sets (a missing or unknown key is refused), types, ranges and choices; JSON
through qornn.jsonio.read_json (size, depth, huge integers, NaN, UTF-8); YAML with
``yaml.safe_load`` semantics after an event scan that refuses tags, anchors / aliases and deep
nesting. Every defect is one QornnError line naming the file and the field.
"""

from __future__ import annotations

import re
from pathlib import Path

from qornn.errors import QornnError
from qornn.jsonio import _short, field, read_json, read_text

from .options import BACKENDS, IO_TYPES, MAX_MAX_LENGTH, STRATEGIES, _PART_RE

MAX_YAML_BYTES = 1 << 20       # qornn's hls4ml_config.yml is ~1 KiB
MAX_YAML_DEPTH = 16            # and nests 5 deep
MAX_SIZE = 1 << 16             # layer sizes
HASH_RE = re.compile(r"^[0-9a-f]{64}$")
STAMP_RE = re.compile(r"^[0-9a-f]{8}$")   # hls4ml's library stamp: it names a file, so no paths
TYPE_RE = re.compile(r"^ap_u?int<[1-9][0-9]{0,2}>$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

# A schema is {key: spec}; spec is a dict (nested schema), or a tuple (kind, lo, hi, choices),
# or a callable(value, path) raising QornnError. Key sets are exact.


def _check(value, schema, path: str, where: str) -> None:
    pre = f"{where}: "
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise QornnError(f"{pre}field '{path}' must be an object, got {_short(value)}")
        for key in value:
            if key not in schema:
                name = f"{path}.{key}" if path else str(key)
                raise QornnError(f"{pre}unknown field '{_short(name)[:80]}'")
        for key, sub in schema.items():
            name = f"{path}.{key}" if path else key
            if key not in value:
                raise QornnError(f"{pre}field '{name}' is missing")
            _check(value[key], sub, name, where)
    elif callable(schema):
        schema(value, path, where)
    else:
        kind, lo, hi, choices = schema
        _leaf(value, path, where, kind, lo, hi, choices)


def _leaf(value, path, where, kind, lo=None, hi=None, choices=None):
    try:
        field({"_": value}, "_", kind, lo, hi, choices=choices)
    except QornnError as e:  # re-word with the real path
        raise QornnError(f"{where}: " + str(e).replace("field '_'", f"field '{path}'")) from None
    return value


def _regex(rx, what):
    def check(value, path, where):
        if not isinstance(value, str) or not rx.match(value):
            raise QornnError(f"{where}: field '{path}' must be {what}, got {_short(value)}")
    return check


def _str_or_none(value, path, where):
    if value is not None and not isinstance(value, str):
        raise QornnError(f"{where}: field '{path}' must be a string or null, got {_short(value)}")


def _shape(value, path, where):
    if not isinstance(value, list) or not 1 <= len(value) <= 4 or \
            not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_MAX_LENGTH * MAX_SIZE
                    for v in value):
        raise QornnError(f"{where}: field '{path}' must be a list of 1..4 positive integers, got {_short(value)}")


def _list_of(schema, lo=1, hi=2):
    def check(value, path, where):
        if not isinstance(value, list) or not lo <= len(value) <= hi:
            raise QornnError(f"{where}: field '{path}' must be a list of {lo}..{hi} entries, got {_short(value)}")
        for i, v in enumerate(value):
            _check(v, schema, f"{path}.{i}", where)
    return check


def _optional(schema, keys):
    """A dict schema in which `keys` may be absent."""
    def check(value, path, where):
        if isinstance(value, dict):
            sub = {k: s for k, s in schema.items() if k not in keys or k in value}
        else:
            sub = schema
        _check(value, sub, path, where)
    return check


def _mapping(value, path, where):
    if not isinstance(value, dict):
        raise QornnError(f"{where}: field '{path}' must be a mapping, got {_short(value)}")


_STR = (str, None, None, None)
_TYPE = _regex(TYPE_RE, "an ap_int<N> / ap_uint<N> type")
_PORT = {"name": _regex(_NAME_RE, "a C identifier"), "shape": _shape, "type": _TYPE}
_INTERFACE = {
    "io_stream": {"project_name": (str, None, None, ("qornn_core",)), "protocol": _STR,
                  "inputs": _list_of(_PORT | {"beat": _STR}, 1, 1), "output": _PORT | {"beats": _STR}},
    "io_parallel": {"project_name": (str, None, None, ("qornn_core",)),
                    "inputs": _list_of(_PORT, 2, 2), "output": _PORT},
}

META_SCHEMA = {
    "format": (str, None, None, ("qornn-hls-project",)),
    "version": (int, None, None, None),   # checked first, with its own message
    "artifact": {"content_hash": _regex(HASH_RE, "a SHA-256 hex digest"), "copy": (str, None, None, ("artifact",))},
    "options": {"backend": (str, None, None, BACKENDS), "reuse_factor": (int, 1, 1 << 30, None),
                "part": _regex(_PART_RE, "a Xilinx part name"), "clock_period": (float, 1e-9, 1000, None),
                "max_length": (int, 1, MAX_MAX_LENGTH, None), "strategy": (str, None, None, STRATEGIES),
                "io_type": (str, None, None, IO_TYPES)},
    "model": {"input_size": (int, 1, MAX_SIZE, None), "hidden_size": (int, 1, MAX_SIZE, None),
              "output_size": (int, 1, MAX_SIZE, None), "activation": (str, None, None, ("modrelu", "relu")),
              "output_mode": (str, None, None, ("every_step", "last_step")), "input_bits": (int, 2, 16, None),
              "x_max": (int, 1, (1 << 15) - 1, None)},
    "interface": _mapping,   # its exact schema depends on options.io_type (validate_meta)
    "types": {k: _TYPE for k in ("x", "h", "W", "U", "V", "b", "c", "acc_w", "acc_u", "pre", "z", "zb", "y")},
    "csim_exact": (bool, None, None, None),
    "versions": {"qornn": _STR, "hls4ml": _STR},
}


def validate_meta(meta, where: str, version: int) -> dict:
    if not isinstance(meta, dict) or meta.get("format") != "qornn-hls-project":
        raise QornnError(f"{where}: not a qornn firmware project description (field 'format' is not "
                         "'qornn-hls-project')")
    if meta.get("version") != version or isinstance(meta.get("version"), bool):
        raise QornnError(f"{where}: project version {_short(meta.get('version'))} (field 'version'), this qornn "
                         f"reads {version}; regenerate the project")
    _check(meta, META_SCHEMA, "", where)
    _check(meta["interface"], _INTERFACE[meta["options"]["io_type"]], "interface", where)
    mdl = meta["model"]
    if mdl["x_max"] != (1 << (mdl["input_bits"] - 1)) - 1:
        raise QornnError(f"{where}: field 'model.x_max' must be 2^(input_bits-1)-1 = "
                         f"{(1 << (mdl['input_bits'] - 1)) - 1}, got {mdl['x_max']}")
    return meta


def read_meta_file(path: Path, version: int) -> dict:
    return validate_meta(read_json(path, "project description"), str(path), version)


# -- hls4ml_config.yml ----------------------------------------------------------------------
def _shapes(value, path, where):
    _mapping(value, path, where)
    if not 1 <= len(value) <= 2:
        raise QornnError(f"{where}: field '{path}' must name 1..2 tensors, got {len(value)}")
    for k, v in value.items():
        _regex(_NAME_RE, "a C identifier")(k, f"{path} key", where)
        _shape(v, f"{path}.{k}", where)


_PRECISION = {"Precision": {"result": _TYPE}}
_YAML_SCHEMA = {
    "Backend": (str, None, None, BACKENDS), "ClockPeriod": (float, 1e-9, 1000, None),
    "ClockUncertainty": _STR, "IOType": (str, None, None, IO_TYPES), "InputData": _STR,
    "InputShapes": _shapes, "OutputDir": _STR, "OutputPredictions": _STR, "OutputShapes": _shapes,
    "Part": _regex(_PART_RE, "a Xilinx part name"), "ProjectName": (str, None, None, ("qornn_core",)),
    "Stamp": _regex(STAMP_RE, "8 hexadecimal digits"), "Version": _STR,
    "WriterConfig": _optional({"Namespace": _str_or_none, "TBOutputStream": _STR,
                               "WriteEmulationConstants": (bool, None, None, None),  # Vitis only
                               "WriteTar": (bool, None, None, None), "WriteWeightsTxt": (bool, None, None, None)},
                              ("WriteEmulationConstants",)),
    "HLSConfig": {
        "LayerName": _optional({"qornn_input": _PRECISION, "qornn_length": _PRECISION}, ("qornn_length",)),
        "Model": {"PipelineStyle": _STR, "Precision": _TYPE, "ReuseFactor": (int, 1, 1 << 30, None),
                  "Strategy": (str, None, None, STRATEGIES)},
    },
}


def _scan_yaml(text: str, where: str) -> None:
    """Refuse tags, anchors / aliases (expansion bombs) and deep nesting, from the event stream
    (PyYAML's parser is iterative; its composer, which would recurse, has not run yet)."""
    import yaml

    depth = 0
    try:
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None):
                raise QornnError(f"{where}: YAML anchors and aliases are not accepted")
            tag = getattr(ev, "tag", None)
            if tag is not None and not (isinstance(ev, yaml.ScalarEvent) and ev.implicit[0]):
                raise QornnError(f"{where}: YAML tag {_short(tag)} is not accepted (plain YAML only)")
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise QornnError(f"{where}: YAML nested deeper than {MAX_YAML_DEPTH} levels")
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as e:
        raise QornnError(f"{where}: not valid YAML ({' '.join(str(e).split())[:160]})") from None


def read_hls_config(path: Path, meta: dict | None = None) -> dict:
    """hls4ml_config.yml, validated (and checked against the project description `meta`)."""
    import yaml

    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise QornnError(f"{path.parent} is not an hls4ml project (hls4ml_config.yml missing)")
    text = read_text(path, "hls4ml configuration", MAX_YAML_BYTES)
    _scan_yaml(text, where)
    try:
        cfg = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise QornnError(f"{where}: not valid YAML ({' '.join(str(e).split())[:160]})") from None
    if not isinstance(cfg, dict):
        raise QornnError(f"{where}: not a YAML mapping of hls4ml settings (got {type(cfg).__name__})")
    _check(cfg, _YAML_SCHEMA, "", where)
    if meta is not None:
        o = meta["options"]
        for key, want in (("Backend", o["backend"]), ("IOType", o["io_type"]), ("Part", o["part"]),
                          ("HLSConfig.Model.ReuseFactor", o["reuse_factor"]),
                          ("HLSConfig.Model.Strategy", o["strategy"])):
            cur = cfg
            for part in key.split("."):
                cur = cur[part]
            if cur != want:
                raise QornnError(f"{where}: field '{key}' is {_short(cur)}, but the project description says "
                                 f"{_short(want)}")
        names = sorted(cfg["InputShapes"])
        want_names = ["qornn_input"] if o["io_type"] == "io_stream" else ["qornn_input", "qornn_length"]
        if names != want_names or list(cfg["InputShapes"]) != want_names:
            raise QornnError(f"{where}: field 'InputShapes' lists the inputs {names}, expected {want_names}")
    return cfg
