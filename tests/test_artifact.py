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
    (lambda s: s.update(format="other"), "format"),
    (lambda s: s["bits"].update(weight=9), "bits.weight"),
    (lambda s: s["bits"].update(act=1), "bits.act"),
    (lambda s: s["bits"].update(weight=2), "tensors.W"),          # codes no longer fit 2 bits
    (lambda s: s["requant"].update(shift=-1), "requant.shift"),
    (lambda s: s["requant"].update(m_w=7), "widths"),            # derived widths disagree
    (lambda s: s["requant"].update(rounding="half_even"), "requant.rounding"),
    (lambda s: s["model"].update(hidden_size=12), "model.hidden_size"),
    (lambda s: s["model"].update(activation="tanh"), "model.activation"),
    (lambda s: s["scales"].update(hidden=float("nan")), "scales.hidden"),
    (lambda s: s["scales"].update(hidden=-1.0), "scales.hidden"),
    (lambda s: s["tensors"]["U"].update(shape=[11, 4]), "tensors.U.shape"),
    (lambda s: s.pop("requant"), "requant"),
    (lambda s: s.update(tensors_sha256="0" * 64), "tensors_sha256"),
])
def test_corrupted_spec_rejected_naming_the_field(art_dir, edit, field):
    path, _ = art_dir
    edit_spec(path, edit)
    with pytest.raises(QornnError, match=field.replace(".", r"\.")):
        load_artifact(path)


def test_tampered_tensor_rejected(art_dir):
    from safetensors.numpy import load_file, save_file

    path, _ = art_dir
    t = load_file(str(path / TENSORS_FILE))
    t["W"][0, 0] = 0 if t["W"][0, 0] != 0 else 1
    save_file(t, str(path / TENSORS_FILE))
    with pytest.raises(QornnError, match="tensors_sha256"):
        load_artifact(path)


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
