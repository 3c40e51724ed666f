"""Datasets: MNIST (IDX files; binarized dynamically or by a threshold), Larochelle & Murray's
fixed binarized MNIST, Frey Face, and a synthetic set for quick runs.

Files are looked up in, first to last: the ``data_dir`` argument (``--data-dir``), the
``AEVB_FAST_DATA`` environment variable, and ``../shared/data`` beside the project's root. Each
file's SHA-256 is checked. A missing file is downloaded from its public source when the network
allows; otherwise the error names the file and where to put it. The project never commits data.

For speed at large batch sizes a dataset lives on the training device as one tensor and
minibatches are drawn by index (``Data.batch``): no per-sample Python in the training loop.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATASETS = ("mnist", "binarized_mnist", "frey", "synthetic")
BINARIZATIONS = ("dynamic", "threshold")


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data directory
    sha256: str
    url: str  # public source, for a download when the file is missing
    gzipped_url: bool = False  # the source serves path + ".gz"


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FILES = {
    "mnist_train_images": DataFile(
        "mnist/train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        _MNIST_URL + "train-images-idx3-ubyte.gz", gzipped_url=True),
    "mnist_test_images": DataFile(
        "mnist/t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        _MNIST_URL + "t10k-images-idx3-ubyte.gz", gzipped_url=True),
    # Larochelle & Murray's fixed binarization, as MATLAB files (variable X) kept in a public
    # repository under .amat names.
    **{
        f"binarized_mnist_{split}": DataFile(
            f"binarized_mnist/binarized_mnist_{split}.mat", sha,
            "https://raw.githubusercontent.com/mingzhang-yin/ARM-gradient/"
            f"bac893cfcec486bbd00b755b12cf8402053b0e84/binarized_mnist_{split}.amat")
        for split, sha in [
            ("train", "79a0312c7389d855cfc97e3812de3998417c5829d8a51543b56a90a91252ae7e"),
            ("valid", "7436afc856959075c7787025bb8a4ba2b520b9230ee39667c66aa7dd2819dd68"),
            ("test", "5bc30222e1e7896cbccd1e1db6b28540cc1230f4d2d5473841a5f6cc54be8d38"),
        ]
    },
    "frey": DataFile(
        "frey/frey_rawface.mat",
        "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64",
        "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"),
}


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where files are looked for, first to last."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get("AEVB_FAST_DATA"):
        dirs.append(Path(os.environ["AEVB_FAST_DATA"]))
    dirs.append(PROJECT_ROOT.parent / "shared" / "data")
    return dirs


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, expected: str) -> Path:
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(
            f"aevb_fast.data: {path} has SHA-256 {actual}, expected {expected}: the file is "
            "damaged or is another file. Replace it with the original."
        )
    return path


def _download(spec: DataFile, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        with urllib.request.urlopen(spec.url, timeout=30) as response:
            if spec.gzipped_url:
                with gzip.GzipFile(fileobj=response) as unzipped:
                    shutil.copyfileobj(unzipped, tmp)
            else:
                shutil.copyfileobj(response, tmp)
    try:
        _verified(Path(tmp.name), spec.sha256)
    except ValueError:
        os.unlink(tmp.name)
        raise
    os.replace(tmp.name, target)  # atomic: a failed download leaves nothing behind


def find_file(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The verified path of FILES[name], downloading it into the first data directory if absent."""
    spec = FILES[name]
    dirs = data_dirs(data_dir)
    for d in dirs:
        path = d / spec.path
        if path.is_file():
            return _verified(path, spec.sha256)
        gz = path.with_name(path.name + ".gz")
        if spec.gzipped_url and gz.is_file():
            with gzip.open(gz, "rb") as f, tempfile.NamedTemporaryFile(delete=False) as tmp:
                shutil.copyfileobj(f, tmp)
            return _verified(Path(tmp.name), spec.sha256)
    target = dirs[0] / spec.path
    error = None
    if download:
        try:
            _download(spec, target)
            return target
        except (OSError, ValueError) as e:  # no network, refused, or a wrong file
            error = e
    looked = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(
        f"aevb_fast.data: {spec.path} not found (looked in {looked})"
        + (f" and could not be downloaded from {spec.url} ({error})" if download else "")
        + f". Put the file at {target}, or point --data-dir / AEVB_FAST_DATA at a folder holding {spec.path}."
    )


def read_idx_images(path: Path) -> np.ndarray:
    """An IDX3 file of uint8 images (big-endian header): (N, rows * cols)."""
    raw = path.read_bytes()
    magic, n, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    if magic != 2051:
        raise ValueError(f"aevb_fast.data: {path} is not an IDX3 image file (magic {magic})")
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(int(n), int(rows) * int(cols))


@dataclass
class Data:
    """A dataset on one device: ``train`` and ``test`` are (N, D) float tensors in [0, 1].

    With ``binarize="dynamic"`` every draw of a training minibatch is a fresh Bernoulli sample
    of the grey levels (the test set is binarized once, with a fixed seed).
    """

    name: str
    train: Tensor
    test: Tensor
    image_shape: tuple[int, int]
    likelihood: str  # "bernoulli" for binary data, "gaussian" for grey levels
    binarize: str | None = None

    @property
    def dim(self) -> int:
        return self.train.shape[1]

    def batch(self, indices: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = self.train.index_select(0, indices)
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        return x

    def to(self, device: torch.device | str) -> "Data":
        return Data(self.name, self.train.to(device), self.test.to(device), self.image_shape,
                    self.likelihood, self.binarize)


def _binarize_fixed(x: Tensor, how: str, seed: int) -> Tensor:
    if how == "threshold":
        return (x > 0.5).to(x.dtype)
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))


def load(name: str, data_dir: str | os.PathLike | None = None, *, binarize: str = "dynamic",
         download: bool = True, synthetic_size: int = 10000, seed: int = 0) -> Data:
    """Loads a dataset on the CPU; ``Data.to(device)`` moves it."""
    if name == "mnist":
        if binarize not in BINARIZATIONS:
            raise ValueError(f"aevb_fast.data: binarize must be one of {BINARIZATIONS}, got {binarize!r}")
        train, test = (torch.from_numpy(read_idx_images(find_file(f, data_dir, download)).copy()).float() / 255
                       for f in ("mnist_train_images", "mnist_test_images"))
        if binarize == "threshold":
            train = _binarize_fixed(train, "threshold", seed)
        test = _binarize_fixed(test, binarize, seed)
        return Data("mnist", train, test, (28, 28), "bernoulli", binarize if binarize == "dynamic" else None)
    if name == "binarized_mnist":
        from scipy.io import loadmat

        split = {k: loadmat(find_file(f"binarized_mnist_{k}", data_dir, download))["X"]
                 for k in ("train", "valid", "test")}
        # train + valid for training, as is usual for this set; the test set is sorted by label,
        # which does not matter for evaluation.
        train = torch.from_numpy(np.concatenate([split["train"], split["valid"]])).float()
        return Data(name, train, torch.from_numpy(split["test"]).float(), (28, 28), "bernoulli")
    if name == "frey":
        from scipy.io import loadmat

        faces = loadmat(find_file("frey", data_dir, download))["ff"].T.astype(np.float32) / 255  # (1965, 560)
        # The paper's split is not given; a fixed random 90/10 split.
        order = torch.randperm(len(faces), generator=torch.Generator().manual_seed(seed))
        faces = torch.from_numpy(faces)[order]
        cut = int(0.9 * len(faces))
        return Data(name, faces[:cut], faces[cut:], (28, 20), "gaussian")
    if name == "synthetic":
        return synthetic(synthetic_size, seed=seed)
    raise ValueError(f"aevb_fast.data: unknown dataset {name!r}; choose from {DATASETS}")


def synthetic(n: int, dim: int = 64, latent: int = 4, seed: int = 0) -> Data:
    """Binary data from a random VAE-like model: z ~ N(0, I), x ~ Bernoulli(sigmoid(W tanh(A z))),
    so that a VAE with a few latents can learn it in seconds."""
    g = torch.Generator().manual_seed(seed)
    a, w = torch.randn(latent, 32, generator=g), 3 * torch.randn(32, dim, generator=g) / 32**0.5
    z = torch.randn(n + n // 5, latent, generator=g)
    x = torch.bernoulli(torch.sigmoid(torch.tanh(z @ a) @ w), generator=g)
    return Data("synthetic", x[:n], x[n:], (8, dim // 8), "bernoulli")
