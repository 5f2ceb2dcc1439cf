"""ONNX export vs the integer simulator: exact integer equality, never a tolerance."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

from qornn.errors import QornnError
from qornn.export.artifact import save_artifact
from qornn.export.onnx_writer import (IR_VERSION, OPSET, build_onnx, check_onnx_matches, make_session,
                                      onnx_bytes, run_onnx)
from qornn.export.arith import plan
from qornn.export.simulator import simulate
from qornn.testing import boundary_inputs, random_artifact

LEVELS = ("disable_all", "all")  # the pinned level, and ORT's default (shown exact here too)

# hidden, inputs, outputs, weight bits, input bits, act bits, output bits, activation, mode, shift
CONFIGS = [
    (1, 1, 1, 1, 2, 2, 1, "modrelu", "every_step", None),
    (1, 3, 2, 8, 16, 16, 8, "relu", "last_step", None),
    (37, 5, 3, 4, 8, 8, 8, "modrelu", "every_step", None),
    (37, 2, 4, 2, 4, 3, 2, "relu", "every_step", None),
    (255, 7, 5, 3, 8, 12, 4, "modrelu", "last_step", None),
    (255, 1, 1, 8, 16, 16, 8, "relu", "every_step", None),
    (64, 10, 10, 5, 6, 6, 5, "modrelu", "last_step", None),
    (17, 4, 3, 6, 10, 10, 6, "relu", "last_step", None),
    (128, 9, 2, 7, 12, 14, 7, "modrelu", "every_step", None),
    (5, 2, 3, 1, 3, 16, 1, "modrelu", "every_step", None),
    (8, 3, 2, 4, 8, 8, 4, "modrelu", "every_step", 0),
    (8, 3, 2, 4, 8, 8, 4, "relu", "last_step", 1),
]


def make(cfg, seed):
    n, m, o, wb, xb, ab, ob, act, mode, shift = cfg
    return random_artifact(np.random.default_rng(seed), hidden=n, inputs=m, outputs=o, weight_bits=wb,
                           input_bits=xb, act_bits=ab, output_bits=ob, activation=act, output_mode=mode,
                           shift=shift)


def saturating_inputs(art, rng, batch, length):
    """Boundary noise plus constant full-scale and zero runs (drives h to +-h_max and 0)."""
    x = boundary_inputs(art, rng, batch, length)
    xm, m = art.x_max, art.input_size
    const = np.stack([np.full((length, m), v) for v in (xm, -xm, 0)]).astype(np.int64)
    return np.concatenate([x, const])


def assert_exact(art, x, model_bytes=None, levels=LEVELS):
    ref = simulate(art, x)
    big = simulate(art, x, plan=plan(art))      # what large batches run (float32 products where proven)
    assert np.array_equal(big.output, ref.output) and np.array_equal(big.hidden, ref.hidden)
    b = model_bytes if model_bytes is not None else onnx_bytes(art)
    for level in levels:
        y, h = run_onnx(make_session(b, level), x)
        assert y.dtype == np.int64 and h.dtype == np.int64
        assert np.array_equal(y, ref.output), level
        assert np.array_equal(h, ref.hidden), level
    return ref


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_random_configs_exact(i):
    art = make(CONFIGS[i], seed=100 + i)
    rng = np.random.default_rng(i)
    b = onnx_bytes(art)
    x = saturating_inputs(art, rng, 6, 48)
    ref = assert_exact(art, x, b)
    assert_exact(art, saturating_inputs(art, rng, 4, 1), b)  # length 1, same file
    assert_exact(art, x, onnx_bytes(art, force_int64=True))  # the other arithmetic path
    # the inputs really reach the clamp (both ends for modReLU) for all but the tiniest nets
    if art.hidden_size > 1:
        assert (np.abs(ref.hidden) == art.h_max).any()


def test_random_sweep_exact():
    """40 configurations drawn over the spec's whole ranges, both arithmetic paths included."""
    rng = np.random.default_rng(2024)
    paths = set()
    done = 0
    while done < 40:
        big = done % 2 == 1  # every other draw aims past 2^53 (the int64 path)
        lo = (100, 6, 12, 12) if big else (1, 1, 2, 2)
        kw = dict(hidden=int(rng.integers(lo[0], 300)), inputs=int(rng.integers(1, 12)),
                  outputs=int(rng.integers(1, 12)), weight_bits=int(rng.integers(lo[1], 9)),
                  input_bits=int(rng.integers(lo[2], 17)), act_bits=int(rng.integers(lo[3], 17)),
                  output_bits=int(rng.integers(1, 9)), activation=str(rng.choice(["modrelu", "relu"])),
                  output_mode=str(rng.choice(["every_step", "last_step"])),
                  shift=int(rng.integers(24, 30)) if big else None)
        if big:  # an input ratio 2^12..2^20 finer than W's: aligned, the W multiplier passes 2^20
            kw["shift_u"] = kw["shift"] + int(rng.integers(10, 16))
            kw["m_u"] = int(rng.integers(2**15, 2**16))
        try:
            art = random_artifact(rng, **kw)
        except QornnError:  # multiplier or bound out of the spec's range: draw again
            continue
        paths.add(art.float64_exact())
        assert_exact(art, saturating_inputs(art, rng, 3, int(rng.integers(1, 40))), levels=("disable_all",))
        done += 1
    assert paths == {True, False}


def test_long_sequence_small_batch():
    art = random_artifact(np.random.default_rng(7), hidden=24, inputs=3, weight_bits=3, act_bits=6)
    x = saturating_inputs(art, np.random.default_rng(8), 2, 2500)
    ref = assert_exact(art, x, levels=("disable_all",))
    assert ref.hidden.shape == (5, 2500, 24)


@pytest.mark.parametrize("block_bytes, tile_rows", [(1, 256), (5000, 2), (4 << 20, 3), (1 << 20, 1)])
def test_simulator_blocks_agree_with_onnx(monkeypatch, block_bytes, tile_rows):
    """The simulator works in batch tiles and blocks of time steps; every boundary must be seamless."""
    from qornn.export import simulator

    monkeypatch.setattr(simulator, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(simulator, "TILE_ROWS", tile_rows)
    for mode, act in (("every_step", "modrelu"), ("last_step", "relu"), ("last_step", "modrelu")):
        art = random_artifact(np.random.default_rng(30), hidden=13, inputs=3, output_mode=mode, activation=act)
        x = saturating_inputs(art, np.random.default_rng(31), 5, 97)
        y, h = run_onnx(onnx_bytes(art), x)
        for force_int64 in (False, True):
            ref = simulate(art, x, force_int64=force_int64)
            assert np.array_equal(ref.output, y) and np.array_equal(ref.hidden, h)
            assert np.array_equal(simulate(art, x, return_hidden=False, force_int64=force_int64).output, y)


def test_one_file_any_batch_and_length():
    art = random_artifact(np.random.default_rng(9), hidden=11, inputs=2, output_mode="last_step")
    sess = make_session(onnx_bytes(art))
    for B, T in ((1, 1), (7, 13), (2, 300)):
        x = boundary_inputs(art, np.random.default_rng(B * T), B, T)
        y, h = run_onnx(sess, x)
        ref = simulate(art, x)
        assert y.shape == (B, 3) and h.shape == (B, T, 11)
        assert np.array_equal(y, ref.output) and np.array_equal(h, ref.hidden)


def _int64_artifact():
    """Big hidden, 8-bit weights, 16-bit activations, and a recurrent ratio 2^16 times finer than
    the input one: aligned to the common shift, the input multiplier passes 2^31 and the input
    term alone passes 2^53."""
    return random_artifact(np.random.default_rng(11), hidden=255, inputs=4, weight_bits=8, input_bits=16,
                           act_bits=16, activation="modrelu", shift=42, m_w=40001, shift_u=26, m_u=40503)


def test_int64_path_exact_beyond_float64():
    art = _int64_artifact()
    assert not art.float64_exact()
    model = build_onnx(art)
    assert {p.key: p.value for p in model.metadata_props}["qornn.arithmetic"] == "int64"
    x = saturating_inputs(art, np.random.default_rng(12), 4, 40)
    ref = assert_exact(art, x, model.SerializeToString())
    # The pre-activations really exceed 2^53, so float64 arithmetic would not be exact here.
    h_prev = np.concatenate([np.zeros_like(ref.hidden[:, :1]), ref.hidden[:, :-1]], axis=1)
    p = art.mult_w * (h_prev @ art.W.astype(np.int64).T) + art.mult_u * (x @ art.U.astype(np.int64).T)
    assert np.abs(p).max() >= 2**53


def test_int64_graph_without_shift():
    """S = 0 (16-bit multipliers, no rounding step): the int64 graph has no Mod/Div at all."""
    art = random_artifact(np.random.default_rng(13), hidden=255, inputs=3, weight_bits=8, input_bits=16,
                          act_bits=16, activation="relu", shift=0, m_w=65535, m_u=65533)
    assert art.shift == 0
    model = build_onnx(art, force_int64=True)
    assert not {"Mod", "Div"} & {nd.op_type for g in (model.graph, model.graph.node[-1].attribute[0].g)
                                 for nd in g.node}
    x = saturating_inputs(art, np.random.default_rng(14), 3, 20)
    assert_exact(art, x, model.SerializeToString(), levels=("disable_all",))


@pytest.mark.parametrize("which", ["float64", "int64"])
def test_real_input_model(which):
    art = make(CONFIGS[2], seed=3) if which == "float64" else _int64_artifact()
    rng = np.random.default_rng(15)
    B, T, m = 4, 30, art.input_size
    k = rng.integers(-art.x_max - 3, art.x_max + 3, size=(B, T, m))
    frac = rng.choice([0.0, 0.5, -0.5, 0.49999999, 0.25], size=(B, T, m))  # exact halves round up
    x = (k + frac) * art.input_scale
    ref = simulate(art, x)
    b = onnx_bytes(art, real_input=True)
    check_onnx_matches(art, b, real_input=True)
    with pytest.raises(QornnError, match="graph inputs"):
        check_onnx_matches(art, b)  # verify's executor feeds codes: a real-input file is refused
    with pytest.raises(QornnError, match="real"):
        run_onnx(b, k)
    for level in LEVELS:
        y, h = run_onnx(make_session(b, level), x)
        assert np.array_equal(y, ref.output) and np.array_equal(h, ref.hidden)


def _all_nodes(graph):
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(a.g)


@pytest.mark.parametrize("mode", ["every_step", "last_step"])
def test_checker_and_shape_inference(mode):
    for art in (random_artifact(np.random.default_rng(16), hidden=37, output_mode=mode), _int64_artifact()):
        model = build_onnx(art)
        assert model.ir_version == IR_VERSION <= 10
        assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        ops = [n for n in _all_nodes(inferred.graph)]
        assert all(n.domain == "" for n in ops)
        assert sum(n.op_type == "Scan" for n in ops) == 1 and len(ops) < 40   # a loop, not unrolled

        def dims(vi):
            return [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]
        (x,), (y, h) = inferred.graph.input, inferred.graph.output
        assert (x.name, x.type.tensor_type.elem_type, dims(x)) == ("x_codes", onnx.TensorProto.INT64,
                                                                     ["batch", "time", art.input_size])
        o = art.output_size
        if art.output_mode == "every_step":
            assert dims(y) == ["batch", "time", o]
        else:
            assert dims(y) == ["batch", o]
        assert dims(h) == ["batch", "time", art.hidden_size]
        assert y.type.tensor_type.elem_type == h.type.tensor_type.elem_type == onnx.TensorProto.INT64
        inner = {v.name: v for v in inferred.graph.value_info}
        assert inner["H_tm"].type.tensor_type.shape.dim[2].dim_value == art.hidden_size


def test_metadata_and_match_check(tmp_path):
    art = random_artifact(np.random.default_rng(17), hidden=9)
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_bytes(art))
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["qornn.content_hash"] == art.content_hash()
    check_onnx_matches(art, path)
    check_onnx_matches(art, path.read_bytes())
    other = random_artifact(np.random.default_rng(18), hidden=9)
    with pytest.raises(QornnError, match="different artifact"):
        check_onnx_matches(other, path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx model" * 10)
    with pytest.raises(QornnError, match="not a readable ONNX model"):
        check_onnx_matches(art, garbage)
    with pytest.raises(QornnError, match="cannot read"):
        check_onnx_matches(art, tmp_path / "missing.onnx")


def _tamper(model: onnx.ModelProto) -> onnx.ModelProto:
    """Negate the input weights of hidden unit 0 (an edit that a check of the metadata alone misses)."""
    init = next(t for t in model.graph.initializer if t.name == "Uk")
    u = onnx.numpy_helper.to_array(init).copy()
    u[:, 0] = -u[:, 0] if u[:, 0].any() else 1
    init.CopyFrom(onnx.numpy_helper.from_array(u, init.name))
    return model


def test_tampered_onnx_is_rejected(tmp_path):
    art = random_artifact(np.random.default_rng(19), hidden=12)
    art_dir = tmp_path / "art"
    save_artifact(art, art_dir, extra_files={"model.onnx": _tamper(build_onnx(art)).SerializeToString()})
    with pytest.raises(QornnError, match="edited after export"):
        check_onnx_matches(art, art_dir / "model.onnx")
    from qornn.verify import verify
    with pytest.raises(QornnError, match="edited after export"):
        verify(art_dir, onnx=True, hls_dir=None, sequences=4, length=10, seed=0)


def test_tampered_onnx_with_forged_hash_is_caught_by_verify(tmp_path, monkeypatch):
    """Even when the graph hash is forged too, the integer comparison finds the edit."""
    from qornn.export import onnx_writer
    from qornn.verify import format_table, verify

    art = random_artifact(np.random.default_rng(20), hidden=12)
    model = _tamper(build_onnx(art))
    for p in model.metadata_props:
        if p.key == "qornn.graph_sha256":
            p.value = onnx_writer._graph_hash(model)
    art_dir = tmp_path / "art"
    save_artifact(art, art_dir, extra_files={"model.onnx": model.SerializeToString()})
    report = verify(art_dir, onnx=True, hls_dir=None, sequences=8, length=50, seed=0)
    onnx_row = report["rows"][1]
    assert not report["ok"] and onnx_row["executor"] == "onnx" and onnx_row["mismatches"] > 0
    assert "MISMATCH" in format_table(report) and "first mismatch" in format_table(report)


def test_the_comparison_can_fail():
    """Perturbing one weight code must change the ONNX outputs against the original simulator."""
    art = random_artifact(np.random.default_rng(21), hidden=16, inputs=4)
    U = art.U.copy()
    U[3, 1] = U[3, 1] + 1 if U[3, 1] < 7 else U[3, 1] - 1
    bad = dataclasses.replace(art, U=U).validate()
    x = saturating_inputs(art, np.random.default_rng(22), 4, 64)
    ref = simulate(art, x)
    y, h = run_onnx(onnx_bytes(bad), x)
    assert not np.array_equal(h, ref.hidden) and not np.array_equal(y, ref.output)
    with pytest.raises(QornnError, match="different artifact"):
        check_onnx_matches(art, onnx_bytes(bad))


def test_verify_end_to_end(tmp_path):
    from qornn.verify import format_table, verify

    art = random_artifact(np.random.default_rng(23), hidden=20, output_mode="last_step")
    art_dir = tmp_path / "art"
    save_artifact(art, art_dir, extra_files={"model.onnx": onnx_bytes(art)})
    report = verify(art_dir, onnx=True, hls_dir=None, sequences=16, length=100, seed=1)
    assert report["ok"]
    sim, ox = report["rows"]
    assert ox["executor"] == "onnx" and ox["mismatches"] == 0
    assert ox["values"] == sim["values"] > 0 and ox["sequences"] == sim["sequences"] > 16
    assert "bit-exact" in format_table(report)
    with pytest.raises(QornnError, match="hls-csim|not found"):
        verify(art_dir, onnx=False, hls_dir=str(tmp_path / "nope"), sequences=2, length=5, seed=0)
    (art_dir / "model.onnx").unlink()
    with pytest.raises(QornnError, match="model.onnx not found"):
        verify(art_dir, onnx=True, hls_dir=None, sequences=2, length=5, seed=0)
    with pytest.raises(QornnError):
        verify(tmp_path / "no-artifact", onnx=True, hls_dir=None, sequences=2, length=5, seed=0)


def test_run_onnx_input_checks():
    art = random_artifact(np.random.default_rng(24), hidden=4, input_bits=4)
    b = onnx_bytes(art)
    with pytest.raises(QornnError, match=r"\[-7, 7\]"):
        run_onnx(b, np.full((1, 2, art.input_size), 8))
    with pytest.raises(QornnError, match="integer input codes"):
        run_onnx(b, np.zeros((1, 2, art.input_size)))
    with pytest.raises(QornnError, match="shape"):
        run_onnx(b, np.zeros((2, art.input_size), dtype=np.int64))


def test_cli_verify_exit_codes(tmp_path, capsys):
    import json

    from qornn.cli import main
    from qornn.export import onnx_writer

    art = random_artifact(np.random.default_rng(25), hidden=10)
    good, bad = tmp_path / "good", tmp_path / "bad"
    save_artifact(art, good, extra_files={"model.onnx": onnx_bytes(art)})
    assert main(["verify", str(good), "--onnx", "--sequences", "4", "--length", "30"]) == 0
    assert "bit-exact" in capsys.readouterr().out
    assert main(["verify", str(good), "--onnx", "--sequences", "4", "--length", "30", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["rows"][1]["mismatches"] == 0
    model = _tamper(build_onnx(art))  # a wrong model with a consistent hash: only the comparison sees it
    for p in model.metadata_props:
        if p.key == "qornn.graph_sha256":
            p.value = onnx_writer._graph_hash(model)
    save_artifact(art, bad, extra_files={"model.onnx": model.SerializeToString()})
    assert main(["verify", str(bad), "--onnx", "--sequences", "4", "--length", "30"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    (bad / "model.onnx").write_bytes(b"junk")
    assert main(["verify", str(bad), "--onnx"]) == 2
    err = capsys.readouterr().err
    assert "not a readable ONNX model" in err and len(err.strip().splitlines()) == 1
