import gzip
import io
import shutil
import tempfile
import urllib.request

import pytest
import torch

from aevb_fast.training import data
from testing import needs_data


@needs_data("mnist")
def test_mnist_dynamic_and_threshold():
    d = data.load("mnist", download=False)
    assert d.train.shape == (60000, 784) and d.test.shape == (10000, 784)
    assert 0.12 < d.train.mean().item() < 0.14 and d.train.max() <= 1
    assert set(d.test.unique().tolist()) == {0.0, 1.0}  # test binarized once
    a = d.batch(torch.arange(100), torch.Generator().manual_seed(0))
    b = d.batch(torch.arange(100), torch.Generator().manual_seed(1))
    assert set(a.unique().tolist()) == {0.0, 1.0} and not torch.equal(a, b)  # fresh each draw
    t = data.load("mnist", download=False, binarize="threshold")
    assert torch.equal(t.batch(torch.arange(100)), t.batch(torch.arange(100)))
    torch.testing.assert_close(t.train[:5], (d.train[:5] > 0.5).float())


@needs_data("binarized_mnist", "frey")
def test_binarized_mnist_and_frey():
    b = data.load("binarized_mnist", download=False)
    assert b.train.shape == (60000, 784) and b.test.shape == (10000, 784)
    f = data.load("frey", download=False)
    assert f.train.shape[1] == 560 and len(f.train) + len(f.test) == 1965
    assert f.image_shape == (28, 20) and f.likelihood == "gaussian"
    assert 0 < f.train.min() and f.train.max() < 1


@needs_data("mnist")
def test_gzipped_idx_is_read_and_leaves_nothing_behind(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    with (
        data._open(data.find_file("mnist_test_images", download=False)) as src,
        gzip.open(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", "wb") as dst,
    ):
        shutil.copyfileobj(src, dst)
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    path = data.find_file("mnist_test_images", tmp_path, download=False)
    assert data.read_idx_images(path).shape == (10000, 784)
    assert list(private_tmp.iterdir()) == [] and sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz"
    ]  # decompressed in memory: no temporary file anywhere


@pytest.mark.parametrize("failure", ["no network", "wrong file"])
def test_a_failed_download_leaves_nothing_behind(tmp_path, monkeypatch, failure):
    def urlopen(url, timeout):
        if failure == "no network":
            raise OSError("network unreachable")
        return io.BytesIO(b"<html>not the file</html>")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(data, "PROJECT_ROOT", tmp_path / "project")
    monkeypatch.delenv("AEVB_FAST_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="could not be downloaded"):
        data.find_file("frey", tmp_path / "data")
    assert not (tmp_path / "data").exists()  # no 0-byte file, no partial file, no empty folder


@needs_data("frey")
def test_a_data_dir_that_does_not_exist_is_said_to_be_missing(tmp_path, monkeypatch, capsys):
    """A mistyped --data-dir: the file is read from the next folder (the same SHA-256), and the
    notice says the folder asked for does not exist."""
    frey = data.find_file("frey", download=False)
    monkeypatch.setenv("AEVB_FAST_DATA", str(frey.parents[1]))
    monkeypatch.setattr(data, "_announced", set())
    monkeypatch.delenv("RANK", raising=False)
    capsys.readouterr()
    assert data.find_file("frey", tmp_path / "typo", download=False) == frey
    assert f"(not in {tmp_path / 'typo'}, which does not exist)" in capsys.readouterr().err


@needs_data("frey")
def test_the_file_used_is_said_once_even_past_an_empty_data_dir(tmp_path, monkeypatch, capsys):
    frey = data.find_file("frey", download=False)  # $AEVB_FAST_DATA or ../shared/data
    monkeypatch.setenv("AEVB_FAST_DATA", str(frey.parents[1]))
    monkeypatch.setattr(data, "_announced", set())
    capsys.readouterr()
    monkeypatch.delenv("RANK", raising=False)
    data.find_file("frey", tmp_path, download=False)
    data.find_file("frey", tmp_path, download=False)
    err = capsys.readouterr().err
    assert err.count("aevb_fast.data: reading") == 1
    assert f"frey_rawface.mat (not in {tmp_path})" in err


def test_missing_file_names_it_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "PROJECT_ROOT", tmp_path / "project")
    monkeypatch.delenv("AEVB_FAST_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="frey/frey_rawface.mat not found.*Put the file at"):
        data.find_file("frey", tmp_path / "empty", download=False)


def test_damaged_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "PROJECT_ROOT", tmp_path / "project")
    (tmp_path / "frey").mkdir()
    (tmp_path / "frey" / "frey_rawface.mat").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="SHA-256"):
        data.find_file("frey", tmp_path, download=False)


def test_environment_variable_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("AEVB_FAST_DATA", str(tmp_path))
    assert data.data_dirs()[0] == tmp_path
    assert data.data_dirs("explicit")[0].name == "explicit"


def test_synthetic():
    d = data.load("synthetic", synthetic_size=500)
    assert d.train.shape == (500, 64) and d.test.shape == (100, 64)
    assert torch.equal(d.train, data.synthetic(500).train)  # deterministic
    with pytest.raises(FileNotFoundError, match="cifar does not exist; --dataset takes a file path or one of mnist"):
        data.load("cifar")
    with pytest.raises(ValueError, match="--test-data goes with a data file; synthetic has its own test set"):
        data.load("synthetic", test_data="test.npy")
