"""Artifact round trip and the rejection of every kind of corrupted or mismatched artifact."""

import json

import numpy as np
import pytest

from qornn.errors import QornnError
from qornn.export.artifact import SPEC_FILE, TENSORS_FILE, load_artifact, save_artifact
from qornn.testing import random_artifact


@pytest.fixture
def art_dir(tmp_path):
    art = random_artifact(np.random.default_rng(0), hidden=11, inputs=3, outputs=2, weight_bits=3, act_bits=9)
    return save_artifact(art, tmp_path / "a"), art


def test_round_trip(art_dir):
    path, art = art_dir
    back = load_artifact(path)
    for k in "WUVbc":
        assert np.array_equal(getattr(back, k), getattr(art, k))
    assert back.spec_dict() == art.spec_dict()
    assert back.content_hash() == art.content_hash()


def edit_spec(path, fn):
    spec = json.loads((path / SPEC_FILE).read_text())
    fn(spec)
    (path / SPEC_FILE).write_text(json.dumps(spec))


@pytest.mark.parametrize("edit, field", [
    (lambda s: s.update(schema_version=99), "schema_version"),
    (lambda s: s.update(schema_version=1), "schema_version"),
    (lambda s: s.update(format="other"), "format"),
    (lambda s: s["bits"].update(W=9), "bits.W"),
    (lambda s: s["bits"].update(h=1), "bits.h"),
    (lambda s: s["bits"].update(U=2), "tensors.U"),              # codes no longer fit 2 bits
    (lambda s: s["bits"].update(weight=4), "bits.weight"),       # unknown (v1) key
    (lambda s: s["requant"].update(shift_w=-1), "requant.shift_w"),
    (lambda s: s["requant"].update(m_w=7), "requant.m_w"),       # disagrees with the scales
    (lambda s: s["requant"].update(m_u=s["requant"]["m_u"] + 2), "requant.m_u"),
    (lambda s: s["requant"].update(rounding="half_even"), "requant.rounding"),
    (lambda s: s["requant"].update(saturation="wrap"), "requant.saturation"),
    (lambda s: s["model"].update(hidden_size=12), "model.hidden_size"),
    (lambda s: s["model"].update(activation="tanh"), "model.activation"),
    (lambda s: s["model"].update(output_mode="last_step"), "content_sha256"),
    (lambda s: s["scales"].update(hidden=float("nan")), "NaN is not a JSON number"),
    (lambda s: s["scales"].update(hidden=-1.0), "scales.hidden"),
    (lambda s: s["scales"].update(input=s["scales"]["input"] * 2), "requant.m_u"),
    (lambda s: s["scales"].update(output=1.0), "scales.output"),
    (lambda s: s["scales"].update(mode="po2x"), "scales.mode"),
    (lambda s: s["ranges"].update(x=[-1, 1]), "ranges.x"),
    (lambda s: s["widths"].update(zb=99), "widths.zb"),
    (lambda s: s["tensors"]["U"].update(shape=[11, 4]), "tensors.U.shape"),
    (lambda s: s["tensors"]["c"].update(dtype="int32"), "tensors.c.dtype"),
    (lambda s: s["narrow_range"].update(W="yes"), "narrow_range.W"),
    (lambda s: s.pop("requant"), "requant"),
    (lambda s: s.update(content_sha256="0" * 64), "content_sha256"),
])
def test_corrupted_spec_rejected_naming_the_field(art_dir, edit, field):
    path, _ = art_dir
    edit_spec(path, edit)
    with pytest.raises(QornnError, match=field.replace(".", r"\.")):
        load_artifact(path)


def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _mutations(v):
    """Hostile replacements of one JSON value: other types, boundary numbers, near misses."""
    out = [None, True, "7", [], {}, -1, 0, 2**63, -2**63, 10**30, 1e308, -0.0, 0.5]
    if isinstance(v, bool):
        out.append(not v)
    elif isinstance(v, int):
        out += [v + 1, v - 1, v * 2, float(v)]
    elif isinstance(v, float):
        out += [v * (1 + 2**-52), v * 2, v / 2, int(v) if v.is_integer() else round(v, 3)]
    elif isinstance(v, str):
        out += [v + " ", v.upper(), ""]
    elif isinstance(v, list):
        out += [v[:-1], v + [1], [str(e) for e in v], [e + 1 if isinstance(e, int) else e for e in v]]
    return [m for m in out if not (type(m) is type(v) and m == v)]


def test_every_field_edit_is_refused_or_harmless(tmp_path):
    """Generated: each leaf of qornn.json, each hostile replacement. Loading must raise a
    one-line QornnError naming a field -- no other exception, and no accepted artifact that
    computes something else. (Only provenance is free text.)"""
    art = random_artifact(np.random.default_rng(3), hidden=6, inputs=3, outputs=2, weight_bits=3, act_bits=7)
    base = save_artifact(art, tmp_path / "base")
    spec0 = json.loads((base / SPEC_FILE).read_text())
    cases = refused = 0
    for path, value in _leaves({k: v for k, v in spec0.items() if k != "provenance"}):
        for new in _mutations(value):
            spec = json.loads(json.dumps(spec0))
            cur = spec
            for k in path[:-1]:
                cur = cur[k]
            cur[path[-1]] = new
            (base / SPEC_FILE).write_text(json.dumps(spec))
            cases += 1
            try:
                back = load_artifact(base)
            except QornnError as e:
                assert "\n" not in str(e) and ("field" in str(e) or "JSON" in str(e)), (path, new, str(e))
                refused += 1
            else:
                assert back.content_hash() == art.content_hash(), (path, new)
    (base / SPEC_FILE).write_text(json.dumps(spec0))
    load_artifact(base)
    assert cases > 400 and refused == cases


def test_tampered_tensor_rejected(art_dir):
    from safetensors.numpy import load_file, save_file

    path, _ = art_dir
    t = load_file(str(path / TENSORS_FILE))
    t["W"][0, 0] = 0 if t["W"][0, 0] != 0 else 1
    save_file(t, str(path / TENSORS_FILE))
    with pytest.raises(QornnError, match="content_sha256"):
        load_artifact(path)


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.update(W=t["W"].astype(np.int16)), "tensors.W.dtype"),
    (lambda t: t.update(extra=np.zeros(2, dtype=np.int8)), "tensors.extra"),
    (lambda t: t.pop("c"), "tensors.c"),
    (lambda t: t.update(b=t["b"][:-1].copy()), "tensors.b.shape"),
])
def test_tensor_file_edits_name_the_tensor(art_dir, edit, field):
    from safetensors.numpy import load_file, save_file

    path, _ = art_dir
    t = load_file(str(path / TENSORS_FILE))
    edit(t)
    save_file(t, str(path / TENSORS_FILE))
    with pytest.raises(QornnError, match=field.replace(".", r"\.")):
        load_artifact(path)


def _independent_widths(art):
    """docs/spec.md 'Widths', written again from the spec with Python integers only."""
    def code_max(bits, narrow):
        return 1 if bits == 1 else 2 ** (bits - 1) - (1 if narrow else 0)

    def width(v):  # two's complement holding [-v, v]
        b = 1
        while not (-(2 ** (b - 1)) <= -v and v <= 2 ** (b - 1) - 1):
            b += 1
        return b

    n, m = art.hidden_size, art.input_size
    hmax, xmax = 2 ** (art.act_bits - 1) - 1, 2 ** (art.input_bits - 1) - 1
    aw = n * code_max(art.recurrent_bits, "W" in art.narrow) * hmax
    au = m * code_max(art.input_weight_bits, "U" in art.narrow) * xmax
    S = max(art.shift_w, art.shift_u)
    p = art.m_w * 2 ** (S - art.shift_w) * aw + art.m_u * 2 ** (S - art.shift_u) * au
    half = 2 ** (S - 1) if S else 0
    z = max((p + half) // 2**S, -((-p + half) // 2**S))
    bmax = max(abs(int(v)) for v in art.b.tolist())
    cmax = max(abs(int(v)) for v in art.c.tolist())
    out = n * code_max(art.output_bits, "V" in art.narrow) * hmax + cmax
    bits_of = lambda lo, hi: next(w for w in range(1, 200) if -(2 ** (w - 1)) <= lo and hi <= 2 ** (w - 1) - 1)  # noqa: E731
    return {"acc_w": width(aw), "acc_u": width(au), "pre": width(p + half), "z": width(z), "zb": width(z + bmax),
            "out": width(out), "b": bits_of(min(art.b.tolist() + [0]), max(art.b.tolist() + [0])),
            "c": bits_of(min(art.c.tolist() + [0]), max(art.c.tolist() + [0]))}


def test_widths_at_the_integer_extremes():
    """Generated: biases at and near the ends of their ranges, every width from Python ints."""
    import dataclasses

    rng = np.random.default_rng(8)
    for trial in range(60):
        art = random_artifact(rng, hidden=int(rng.integers(1, 40)), inputs=int(rng.integers(1, 6)),
                              outputs=int(rng.integers(1, 4)), weight_bits=int(rng.integers(1, 9)),
                              act_bits=int(rng.integers(2, 17)), input_bits=int(rng.integers(2, 17)),
                              output_bits=int(rng.integers(1, 9)))
        b, c = art.b.astype(np.int64), art.c.astype(np.int64)
        b[0] = rng.choice([-(2**31 - 1), 2**31 - 1, -(2**30), int(rng.integers(-2**31 + 1, 2**31))])
        c[0] = rng.choice([-(2**61), 2**61 - 1, -(2**40) - 1, int(rng.integers(-2**50, 2**50))])
        big = dataclasses.replace(art, b=b.astype(np.int32), c=c).validate()
        assert big.widths() == _independent_widths(big)
        assert big.widths()["zb"] >= 33 if abs(int(b[0])) >= 2**31 - 1 else True
    art = random_artifact(rng, hidden=5, inputs=2)
    for bad_b in (-(2**31), 2**31):
        b = art.b.astype(np.int64)
        b[1] = bad_b
        with pytest.raises(QornnError, match=r"tensors\.b"):
            dataclasses.replace(art, b=b).validate()
    for bad_c in (-(2**63), -(2**63) + 1, 2**63 - 1, 2**62, -(2**62)):
        c = art.c.copy()
        c[0] = bad_c
        with pytest.raises(QornnError, match=r"tensors\.c"):
            dataclasses.replace(art, c=c).validate()


def test_requant_constant_precision():
    """Generated ratios over 2^-46..2^15: 16-bit multiplier, lowest terms, relative error <= 2^-16;
    a power of two is a plain shift (M = 1)."""
    import math

    from qornn.export.artifact import requant_constant, requant_error

    rng = np.random.default_rng(4)
    for r in np.exp2(rng.uniform(-46, 15.99, size=3000)).tolist() + [1.0, 0.5, 2.0**-30, 3.0, 65535.0]:
        M, S = requant_constant(r)
        assert 1 <= M < 2**16 and 0 <= S <= 62 and (M % 2 == 1 or S == 0)
        assert requant_error(M, S, r) <= 2**-16
        if math.frexp(r)[0] == 0.5 and r <= 1:
            assert M == 1
    for r in (2.0**16, 1e9, 2.0**-80, 0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(QornnError, match="requantiz"):
            requant_constant(r)


def test_truncated_and_missing_files(art_dir, tmp_path):
    path, _ = art_dir
    data = (path / TENSORS_FILE).read_bytes()
    (path / TENSORS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(QornnError, match="corrupt"):
        load_artifact(path)
    (path / SPEC_FILE).write_text("{not json")
    with pytest.raises(QornnError, match="not valid JSON"):
        load_artifact(path)
    with pytest.raises(QornnError, match="not found"):
        load_artifact(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QornnError, match="not a qornn artifact"):
        load_artifact(tmp_path / "empty")


def test_output_dir_refused_unless_force(art_dir, tmp_path):
    path, art = art_dir
    with pytest.raises(QornnError, match="--force"):
        save_artifact(art, path)
    save_artifact(art, path, force=True)
    load_artifact(path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(QornnError, match="other files"):
        save_artifact(art, other)
    assert (other / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_invalid_artifact_never_written(tmp_path):
    art = random_artifact(np.random.default_rng(1), hidden=4, inputs=2)
    art.W[0, 0] = 100  # outside 4 bits
    with pytest.raises(QornnError, match="tensors.W"):
        save_artifact(art, tmp_path / "bad")
    assert list(tmp_path.iterdir()) == []


def test_artifact_without_provenance_is_one_line_and_export_records_no_path(tmp_path):
    """Issue 20: a missing 'provenance' was a KeyError; the run's absolute path was shipped."""
    import json

    from qornn.cli import main
    from qornn.errors import QornnError
    from qornn.export.artifact import load_artifact

    run, art = tmp_path / "deep" / "run", tmp_path / "art"
    assert main(["train", "--task", "adding", "--length", "12", "--hidden", "4", "--steps", "0", "--out", str(run)]) == 0
    assert main(["export", str(run), "--out", str(art)]) == 0
    spec = json.loads((art / "qornn.json").read_text())
    assert spec["provenance"]["run"] == "run" and str(tmp_path) not in (art / "qornn.json").read_text()
    del spec["provenance"]
    (art / "qornn.json").write_text(json.dumps(spec))
    with pytest.raises(QornnError, match="provenance.*missing"):
        load_artifact(art)
