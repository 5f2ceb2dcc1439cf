"""Options of a generated firmware project, validated with one-line QornnError messages."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from qornn.errors import QornnError

BACKENDS = ("Vitis", "Vivado")
STRATEGIES = ("Latency", "Resource")
IO_TYPES = ("io_stream", "io_parallel")
DEFAULT_PART = "xcvu13p-flga2577-2-e"
DEFAULT_MAX_LENGTH = 1024
MAX_MAX_LENGTH = 1 << 20
_PART_RE = re.compile(r"^x[a-z0-9]+(-[a-z0-9]+)*$", re.IGNORECASE)


@dataclass(frozen=True)
class HlsOptions:
    backend: str = "Vitis"
    reuse_factor: int = 1
    part: str = DEFAULT_PART
    clock_period: float = 5
    max_length: int = DEFAULT_MAX_LENGTH
    strategy: str = "Latency"
    io_type: str = "io_stream"

    def as_dict(self) -> dict:
        return asdict(self)


def _choice(what: str, value, choices) -> str:
    if isinstance(value, str):
        for c in choices:
            if value.lower() == c.lower():
                return c
    raise QornnError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def _int(what: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
        raise QornnError(f"{what} must be an integer, got {value!r}")
    v = int(value)
    if not lo <= v <= hi:
        raise QornnError(f"{what} must be in {lo}..{hi}, got {v}")
    return v


def valid_reuse_factor(n_in: int, n_out: int, rf: int, strategy: str = "Resource") -> bool:
    """Whether `rf` suits one dense product of n_in inputs and n_out outputs.

    Resource: hls4ml's rule (FPGABackend._validate_reuse_factor), which its resource kernels
    need to be correct. Latency: the kernel is correct for any rf; rf sets the pipeline interval
    and the multiplier budget ceil(n_in*n_out / rf), so rf may not exceed n_in*n_out."""
    if strategy.lower() == "latency":
        return 1 <= rf <= n_in * n_out
    multfactor = min(n_in, rf)
    multiplier_limit = math.ceil(n_in * n_out / multfactor)
    ok = (multiplier_limit % n_out == 0) or rf >= n_in
    ok = ok and (rf % n_in == 0 or rf < n_in)
    return ok and (n_in * n_out) % rf == 0


def products(n: int, m: int, o: int) -> list[tuple[str, int, int]]:
    """The three matrix products of the core as (name, n_in, n_out)."""
    return [("W.h", n, n), ("U.x", m, n), ("V.h", n, o)]


def valid_reuse_factors(n: int, m: int, o: int, strategy: str = "Resource") -> list[int]:
    """Reuse factors that suit all three products (one reuse factor applies to all of them)."""
    top = min(a * b for _, a, b in products(n, m, o))
    return [r for r in range(1, top + 1)
            if all(valid_reuse_factor(a, b, r, strategy) for _, a, b in products(n, m, o))]


def _ranges(values: list[int]) -> str:
    if values and values == list(range(values[0], values[-1] + 1)) and len(values) > 3:
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values))


def validate_options(art, backend="Vitis", reuse_factor=1, part=DEFAULT_PART, clock_period=5,
                     max_length=DEFAULT_MAX_LENGTH, strategy="Latency", io_type="io_stream") -> HlsOptions:
    backend = _choice("backend", backend, BACKENDS)
    strategy = _choice("strategy", strategy, STRATEGIES)
    io_type = _choice("io type", io_type, IO_TYPES)
    if part is None:
        part = DEFAULT_PART
    if not isinstance(part, str) or not _PART_RE.match(part):
        raise QornnError(f"invalid FPGA part {part!r} (expected a Xilinx part name such as {DEFAULT_PART})")
    if isinstance(clock_period, bool) or not isinstance(clock_period, (int, float)) or not math.isfinite(clock_period) \
            or not 0 < clock_period <= 1000:
        raise QornnError(f"clock period must be a positive number of ns (at most 1000), got {clock_period!r}")
    max_length = _int("max length", max_length, 1, MAX_MAX_LENGTH)
    reuse_factor = _int("reuse factor", reuse_factor, 1, 1 << 30)
    n, m, o = art.hidden_size, art.input_size, art.output_size
    bad = [name for name, a, b in products(n, m, o) if not valid_reuse_factor(a, b, reuse_factor, strategy)]
    if bad:
        valid = valid_reuse_factors(n, m, o, strategy)
        raise QornnError(
            f"reuse factor {reuse_factor} does not suit {', '.join(bad)} (hidden {n}, inputs {m}, outputs {o}, "
            f"{strategy} strategy); valid reuse factors for this model: {_ranges(valid)}")
    cp = float(clock_period)
    return HlsOptions(backend=backend, reuse_factor=reuse_factor, part=part,
                      clock_period=int(cp) if cp.is_integer() else cp, max_length=max_length,
                      strategy=strategy, io_type=io_type)
