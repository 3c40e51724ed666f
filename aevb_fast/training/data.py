"""Datasets: MNIST (IDX files; binarized dynamically or by a threshold), Larochelle & Murray's
fixed binarized MNIST, Frey Face, a synthetic set for quick runs, and the user's own data (a
tensor, a numpy array, a Dataset, or a .npy/.npz/.pt file) of any event shape.

Files are looked up in, first to last: the ``data_dir`` argument (``--data-dir``), the
``AEVB_FAST_DATA`` environment variable, and ``../shared/data`` beside the project's root (the
file read is announced, with the folders passed over, a missing one said to be missing). Each
file's SHA-256 is checked. A missing file is downloaded from its public source when the network
allows; otherwise the error names the file and where to put it. The project never commits data.

For speed at large batch sizes a dataset lives on the training device as one tensor and
minibatches are drawn by index (``Data.batch``): no per-sample Python in the training loop.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .warn import warn_user

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the project's root (aevb_fast/training/..)
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
        _MNIST_URL + "train-images-idx3-ubyte.gz",
        gzipped_url=True,
    ),
    "mnist_test_images": DataFile(
        "mnist/t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        _MNIST_URL + "t10k-images-idx3-ubyte.gz",
        gzipped_url=True,
    ),
    # Larochelle & Murray's fixed binarization, as MATLAB files (variable X) kept in a public
    # repository under .amat names.
    **{
        f"binarized_mnist_{split}": DataFile(
            f"binarized_mnist/binarized_mnist_{split}.mat",
            sha,
            "https://raw.githubusercontent.com/mingzhang-yin/ARM-gradient/"
            f"bac893cfcec486bbd00b755b12cf8402053b0e84/binarized_mnist_{split}.amat",
        )
        for split, sha in [
            ("train", "79a0312c7389d855cfc97e3812de3998417c5829d8a51543b56a90a91252ae7e"),
            ("valid", "7436afc856959075c7787025bb8a4ba2b520b9230ee39667c66aa7dd2819dd68"),
            ("test", "5bc30222e1e7896cbccd1e1db6b28540cc1230f4d2d5473841a5f6cc54be8d38"),
        ]
    },
    "frey": DataFile(
        "frey/frey_rawface.mat",
        "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64",
        "https://cs.nyu.edu/~roweis/data/frey_rawface.mat",
    ),
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


def _open(path: Path):
    """A file's bytes; a ``.gz`` file is decompressed as it is read (never to a temporary file)."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's content (of the decompressed content for a ``.gz`` file)."""
    digest = hashlib.sha256()
    with _open(path) as f:
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
    """Downloads to a temporary file beside the target, then renames it: a failed or wrong
    download leaves nothing behind, not even the folders it made."""
    made = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as f:
            tmp = Path(f.name)
            with urllib.request.urlopen(spec.url, timeout=30) as response:
                source = gzip.GzipFile(fileobj=response) if spec.gzipped_url else response
                shutil.copyfileobj(source, f)
        _verified(tmp, spec.sha256)
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        for folder in made:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


_announced: set[Path] = set()


def _announce(path: Path, looked_first: list[Path]) -> None:
    """Says once per process which file a dataset is read from (rank 0 only), and when it is
    not in the first folder asked for (--data-dir), that the search went on past it."""
    if path in _announced or os.environ.get("RANK", "0") != "0":
        return
    _announced.add(path)
    # A folder that does not exist is said so: a mistyped --data-dir (the file read instead has the
    # same SHA-256, so the run is the same; a run moved since, resumed or evaluated, goes on).
    skipped = ", ".join(f"{d}, which does not exist" if not d.exists() else str(d) for d in looked_first)
    skipped = f" (not in {skipped})" if looked_first else ""
    print(f"aevb_fast.data: reading {path}{skipped}", file=sys.stderr)


def find_file(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The verified path of FILES[name] (possibly its ``.gz``), downloading it into the first data
    directory if absent."""
    spec = FILES[name]
    dirs = data_dirs(data_dir)
    for i, d in enumerate(dirs):
        path = d / spec.path
        gz = path.with_name(path.name + ".gz")
        for candidate in (path, gz) if spec.gzipped_url else (path,):
            if candidate.is_file():
                _announce(candidate, dirs[:i])
                return _verified(candidate, spec.sha256)
    target = dirs[0] / spec.path
    error = None
    if download:
        try:
            _download(spec, target)
            _announce(target, [])
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
    with _open(path) as f:
        raw = f.read()
    magic, n, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    if magic != 2051:
        raise ValueError(f"aevb_fast.data: {path} is not an IDX3 image file (magic {magic})")
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(int(n), int(rows) * int(cols))


@dataclass
class Data:
    """A dataset on one device: ``train`` and ``test`` are float tensors ``(N, *event_shape)``.

    With ``binarize="dynamic"`` every draw of a training minibatch is a fresh Bernoulli sample
    of the grey levels (the test set is binarized once, with a fixed seed). ``image_shape`` is
    (height, width) when the points can be drawn as grey images, else None.
    """

    name: str
    train: Tensor
    test: Tensor
    image_shape: tuple[int, int] | None
    likelihood: str  # the natural one: "bernoulli" for values in [0, 1], "gaussian" for grey levels
    binarize: str | None = None

    @property
    def dim(self) -> int:
        """Values per data point (the flattened event)."""
        return self.train[0].numel()

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    def batch(self, indices: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = self.train.index_select(0, indices)
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        return x

    def to(self, device: torch.device | str) -> "Data":
        return Data(
            self.name, self.train.to(device), self.test.to(device), self.image_shape, self.likelihood, self.binarize
        )

    def check_range(self, likelihood: str, paper_model: bool, warn: bool = True) -> None:
        """Values a model can fit, else a one-line user error: Bernoulli targets lie in [0, 1], and
        so must Gaussian data for the paper's decoder, whose mean is a sigmoid; binary data takes
        no Gaussian likelihood (see ``is_binary``). With ``warn`` (one process of a distributed
        run), grey levels under a Bernoulli likelihood get a warning."""
        if likelihood == "gaussian" and self.is_binary():
            drawn = ", drawn afresh for every minibatch" if self.binarize == "dynamic" else ""
            raise ValueError(
                f"data: {self.name} is binary (every value 0 or 1{drawn}), and a Gaussian with a "
                "learned variance has no maximum there: its variance shrinks towards zero around each "
                "0 and 1 and the bound runs off to +-inf instead of learning; use --likelihood "
                "bernoulli for binary data"
            )
        if likelihood != "bernoulli" and not paper_model:
            return
        for split, x in (("training", self.train), ("test", self.test)):
            if x.numel() and (x.min() < 0 or x.max() > 1):
                needs = (
                    "a Bernoulli likelihood needs values in [0, 1]"
                    if likelihood == "bernoulli"
                    else "the paper's Gaussian decoder (the likelihood of data that is not binary; its "
                    "mean is a sigmoid) needs values in [0, 1]"
                )
                # A model of the user's own (from Python) takes its likelihood from its decoder.
                other = ", or give the model a decoder that returns (mean, logvar): a Gaussian likelihood"
                raise ValueError(
                    f"data: the {split} points of {self.name!r} have values in [{x.min().item():g}, "
                    f"{x.max().item():g}], but {needs}: scale the data (e.g. divide 8-bit pixels by 255)"
                    + (other if likelihood == "bernoulli" and not paper_model else "")
                )
        if warn and not self.bounds_in_nats(likelihood):
            warn_user(
                GreyLevelsUnderBernoulli(
                    f"data: {self.name!r} is not binary (grey levels in [0, 1]): its Bernoulli log-likelihood is "
                    "minus the binary cross-entropy, not a normalised density, so the bounds this run reports "
                    "(and aevb-fast eval's log p(x)) are not nats comparable with published ones; binarize the "
                    "data for a bound, or take a Gaussian likelihood"
                )
            )

    def bounds_in_nats(self, likelihood: str) -> bool:
        """Whether bounds under this likelihood are log-densities: not a Bernoulli of grey levels,
        whose log-likelihood is minus the binary cross-entropy."""
        return likelihood != "bernoulli" or self.is_binary()

    def is_binary(self) -> bool:
        """Whether the model sees only 0s and 1s: binarized for every minibatch, or so stored."""
        return self.binarize == "dynamic" or all(
            bool(((x == 0) | (x == 1)).all()) for x in (self.train, self.test) if x.numel()
        )


class GreyLevelsUnderBernoulli(UserWarning):
    """A Bernoulli likelihood of grey levels: its bounds are minus cross-entropies, not nats."""


def _binarize_fixed(x: Tensor, how: str, seed: int) -> Tensor:
    if how == "threshold":
        return (x > 0.5).to(x.dtype)
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    binarize: str = "dynamic",
    download: bool = True,
    synthetic_size: int = 10000,
    seed: int = 0,
    test_data: str | os.PathLike | None = None,
    test_fraction: float = 0.1,
) -> Data:
    """Loads a built-in dataset by name, or a user's data file by path (see ``load_file``), on
    the CPU; ``Data.to(device)`` moves it."""
    if name not in DATASETS:
        return load_file(name, test_data, test_fraction=test_fraction, seed=seed)
    if test_data is not None:
        raise ValueError(f"data: --test-data goes with a data file; {name} has its own test set")
    if name == "mnist":
        if binarize not in BINARIZATIONS:
            raise ValueError(f"aevb_fast.data: binarize must be one of {BINARIZATIONS}, got {binarize!r}")
        train, test = (
            torch.from_numpy(read_idx_images(find_file(f, data_dir, download)).copy()).float() / 255
            for f in ("mnist_train_images", "mnist_test_images")
        )
        if binarize == "threshold":
            train = _binarize_fixed(train, "threshold", seed)
        test = _binarize_fixed(test, binarize, seed)
        return Data("mnist", train, test, (28, 28), "bernoulli", binarize if binarize == "dynamic" else None)
    if name == "binarized_mnist":
        from scipy.io import loadmat

        split = {
            k: loadmat(find_file(f"binarized_mnist_{k}", data_dir, download))["X"] for k in ("train", "valid", "test")
        }
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
    return synthetic(synthetic_size, seed=seed)


def synthetic(n: int, dim: int = 64, latent: int = 4, seed: int = 0) -> Data:
    """Binary data from a random VAE-like model: z ~ N(0, I), x ~ Bernoulli(sigmoid(W tanh(A z))),
    so that a VAE with a few latents can learn it in seconds."""
    g = torch.Generator().manual_seed(seed)
    a, w = torch.randn(latent, 32, generator=g), 3 * torch.randn(32, dim, generator=g) / 32**0.5
    z = torch.randn(n + n // 5, latent, generator=g)
    x = torch.bernoulli(torch.sigmoid(torch.tanh(z @ a) @ w), generator=g)
    return Data("synthetic", x[:n], x[n:], (8, dim // 8), "bernoulli")


# ---- the user's own data -------------------------------------------------------------------

DATA_FILE_SUFFIXES = (".npy", ".npz", ".pt")


def as_tensor(values, what: str = "data") -> Tensor:
    """A float32 tensor ``(N, *event_shape)`` from a tensor, a numpy array or a Dataset (whose
    items are tensors, arrays, or tuples whose first element is the data point, as
    ``(image, label)``); checked for at least two dimensions and finite values."""
    if isinstance(values, torch.utils.data.Dataset) and not isinstance(values, Tensor):
        items = [item[0] if isinstance(item, (tuple, list)) else item for item in values]
        if not items:
            raise ValueError(f"data: {what} is an empty Dataset")
        values = torch.stack([torch.as_tensor(item) for item in items])
    elif isinstance(values, np.ndarray):
        values = torch.from_numpy(values)
    if not isinstance(values, Tensor):
        raise TypeError(f"data: {what} must be a tensor, a numpy array or a torch Dataset, got {type(values).__name__}")
    if values.dtype == torch.bool or not (
        values.is_floating_point() or values.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    ):
        raise ValueError(f"data: {what} must hold numbers, got dtype {values.dtype}")
    if values.dim() < 2 or len(values) == 0:
        raise ValueError(f"data: {what} must have shape (N, *event_shape) with N >= 1, got {tuple(values.shape)}")
    values = values.detach().cpu().float().contiguous()
    if not torch.isfinite(values).all():
        raise ValueError(f"data: {what} holds NaN or infinite values")
    return values


def image_shape_of(event_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(height, width) for events that can be drawn as grey images: (H, W), (1, H, W), (H, W, 1)
    (channels last, as numpy and TensorFlow keep images), or (D,) with D a square; None otherwise."""
    if len(event_shape) == 3 and event_shape[0] == 1:
        event_shape = event_shape[1:]
    elif len(event_shape) == 3 and event_shape[2] == 1:
        event_shape = event_shape[:2]
    if len(event_shape) == 2:
        return tuple(event_shape)
    if len(event_shape) == 1 and math.isqrt(event_shape[0]) ** 2 == event_shape[0]:
        side = math.isqrt(event_shape[0])
        return (side, side)
    return None


def from_arrays(train, test=None, *, name: str = "data", test_fraction: float = 0.1, seed: int = 0) -> Data:
    """A ``Data`` from the user's points: ``test`` given, or held out from ``train`` (a random
    ``test_fraction`` of it, fixed by ``seed``)."""
    train = as_tensor(train, "the training data")
    if test is None:
        if len(train) < 2:
            raise ValueError("data: a held-out test split needs at least 2 data points")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        cut = len(train) - max(1, round(test_fraction * len(train)))
        train, test = train[order[:cut]], train[order[cut:]]
    else:
        test = as_tensor(test, "the test data")
        if test.shape[1:] != train.shape[1:]:
            raise ValueError(
                f"data: the test points have shape {tuple(test.shape[1:])}, "
                f"the training points {tuple(train.shape[1:])}"
            )
    binary = bool(((train == 0) | (train == 1)).all())
    in_unit = bool(train.min() >= 0 and train.max() <= 1)
    likelihood = "bernoulli" if binary or in_unit else "gaussian"
    return Data(name, train, test, image_shape_of(tuple(train.shape[1:])), likelihood)


def read_data_file(path: str | os.PathLike, what: str = "data file") -> tuple[object, object | None]:
    """(train, test or None) from a .npy (one array), .npz (arrays ``train`` and optionally
    ``test``) or .pt file (a tensor, or a dict with ``train`` and optionally ``test``)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"data: {what} {path} is a directory; give the .npy/.npz/.pt file inside it "
            f"(or --data-dir for the folder of the built-in datasets {', '.join(DATASETS)})"
        )
    if not path.is_file():
        hint = (
            ""
            if path.suffix in DATA_FILE_SUFFIXES
            else (f"; --dataset takes a file path or one of {', '.join(DATASETS)}")
        )
        raise FileNotFoundError(f"data: {what} {path} does not exist{hint}")
    if path.suffix not in DATA_FILE_SUFFIXES:
        raise ValueError(f"data: {what} {path} must be a {', '.join(DATA_FILE_SUFFIXES)} file")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if path.suffix == ".pt":
            content = torch.load(path, map_location="cpu", weights_only=True)
        else:
            with np.load(path, allow_pickle=False) as npz:
                content = {k: npz[k] for k in npz.files}
    except Exception as error:  # a damaged or foreign file: say which and why, in one line
        raise ValueError(f"data: cannot read {what} {path}: {error}") from None
    if isinstance(content, (Tensor, np.ndarray)):
        return content, None
    if isinstance(content, dict) and "train" in content:
        return content["train"], content.get("test")
    keys = sorted(content) if isinstance(content, dict) else type(content).__name__
    raise ValueError(
        f"data: {what} {path} must hold an array, or arrays named 'train' and optionally 'test' (found {keys})"
    )


def load_file(
    path: str | os.PathLike, test_path: str | os.PathLike | None = None, *, test_fraction: float = 0.1, seed: int = 0
) -> Data:
    """The user's data from files (see ``read_data_file``); the test points from ``test_path``,
    else from the file's ``test`` array, else a held-out split."""
    train, test = read_data_file(path)
    if test_path is not None:
        test_file, _ = read_data_file(test_path, "test data file")
        test = test_file
    return from_arrays(train, test, name=Path(path).name, test_fraction=test_fraction, seed=seed)
