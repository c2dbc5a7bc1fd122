import pickle

import numpy as np
import pytest
import torch

from pyro_gem.tasks.miniimagenet import MEAN, STD, miniimagenet, read_miniimagenet, write_fixture


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    return {
        "csv": write_fixture(root / "csv", "csv", classes=(4, 3, 3), per_class=12),
        "pickle": write_fixture(root / "pickle", "pickle", classes=(4, 3, 3), per_class=12),
    }


@pytest.mark.parametrize("fmt", ["csv", "pickle"])
def test_both_formats_read_into_uint8_rgb_splits_by_class(copies, fmt, tmp_path):
    splits = read_miniimagenet(copies[fmt], cache_dir=tmp_path)
    assert [splits[k].num_classes for k in ("train", "validation", "test")] == [4, 3, 3]
    train = splits["train"]
    assert train.images.shape == (48, 3, 84, 84) and train.images.dtype == torch.uint8
    assert train.names == sorted(train.names) and train.counts.tolist() == [12] * 4
    assert not set(train.names) & set(splits["test"].names)


def test_the_two_formats_hold_the_same_images(copies, tmp_path):
    a = read_miniimagenet(copies["csv"], cache_dir=tmp_path)["test"]
    b = read_miniimagenet(copies["pickle"], cache_dir=tmp_path)["test"]
    assert a.names == b.names
    # JPEG is lossy: close, not equal
    assert (a.images.float() - b.images.float()).abs().mean() < 6


def test_a_csv_copy_is_decoded_once_then_read_from_the_cache(copies, tmp_path, monkeypatch):
    first = read_miniimagenet(copies["csv"], cache_dir=tmp_path)
    assert len(list((tmp_path / "miniimagenet").glob("*.pt"))) == 3
    import PIL.Image

    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: pytest.fail("decoded again"))
    again = read_miniimagenet(copies["csv"], cache_dir=tmp_path)
    assert torch.equal(first["train"].images, again["train"].images)


def test_images_of_another_size_are_resized_to_84(tmp_path):
    write_fixture(tmp_path / "big", "csv", classes=(2, 2, 2), per_class=3, size=100)
    splits = read_miniimagenet(tmp_path / "big", cache_dir=tmp_path / "cache")
    assert splits["validation"].images.shape == (6, 3, 84, 84)


def test_episodes_are_standardised_rgb(copies, tmp_path):
    tasks = miniimagenet(copies["pickle"], ways=3, shots=2, query=4, cache_dir=tmp_path)
    batch = tasks.sample(2, torch.Generator().manual_seed(0))
    x, y = batch.support
    assert x.shape == (2, 6, 3, 84, 84) and y.tolist() == [[0, 0, 1, 1, 2, 2]] * 2
    raw = read_miniimagenet(copies["pickle"])["train"].images.float() / 255
    expected = (raw.mean((0, 2, 3)) - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(
        tasks.images(tasks.splits["train"], torch.arange(48)).mean((0, 2, 3)), expected, atol=1e-4
    )


def test_missing_or_malformed_copies_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="no miniImageNet folder at .*train.csv, val.csv"):
        read_miniimagenet(tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("")
    with pytest.raises(FileNotFoundError, match=r"no miniImageNet copy in .*\['notes.txt'\].*pkl"):
        read_miniimagenet(tmp_path / "other")
    bad = tmp_path / "bad"
    bad.mkdir()
    for split in ("train", "val", "test"):
        with open(bad / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": np.zeros((2, 84, 84), np.uint8), "class_dict": {}}, f)
    with pytest.raises(ValueError, match=r"image_data must be uint8 \(N, H, W, 3\)"):
        read_miniimagenet(bad)
    write_fixture(tmp_path / "gap", "csv", classes=(2, 2, 2), per_class=3)
    next((tmp_path / "gap" / "images").iterdir()).unlink()
    with pytest.raises(FileNotFoundError, match="1 images named in .* are missing"):
        read_miniimagenet(tmp_path / "gap", cache_dir=tmp_path / "cache")
