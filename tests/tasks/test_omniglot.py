import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_gem.tasks import omniglot as omniglot_module
from pyro_gem.tasks.omniglot import (
    FULL_SET_CHARACTERS,
    MINIMAL_ALPHABETS,
    MINIMAL_SPLIT,
    omniglot,
    omniglot_splits,
    read_omniglot,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot"


def write_set(root: Path, alphabets: dict[str, int], drawers: int = 20, seed: int = 0) -> Path:
    """An image set in Omniglot's layout: black strokes (a random box) on white, 105×105."""
    rng = np.random.default_rng(seed)
    for alphabet, characters in alphabets.items():
        for c in range(1, characters + 1):
            folder = root / alphabet / f"character{c:02d}"
            folder.mkdir(parents=True)
            for d in range(1, drawers + 1):
                pixels = np.ones((105, 105), dtype=bool)
                r, s = rng.integers(10, 60, size=2)
                pixels[r : r + 30, s : s + 8] = False
                Image.fromarray(pixels).save(folder / f"{c:04d}_{d:02d}.png")
    return root


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(folder.rglob("*.png")):
            z.write(f, f.relative_to(folder.parent))
    return archive


def test_reads_the_torchvision_layout_with_strokes_bright_at_28_pixels(tmp_path, monkeypatch):
    root = tmp_path / "data" / "omniglot-py"
    write_set(root / "images_background", {"Alpha": 2, "Beta": 1})
    write_set(root / "images_evaluation", {"Gamma": 2}, seed=1)
    images = read_omniglot(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert sorted(images) == [
        "Alpha/character01", "Alpha/character02", "Beta/character01",
        "Gamma/character01", "Gamma/character02",
    ]  # fmt: skip
    x = images["Alpha/character01"]
    assert x.shape == (20, 1, 28, 28) and x.dtype == torch.uint8
    assert x.float().mean() < 60  # mostly dark background, bright strokes
    decoded = []
    monkeypatch.setattr(omniglot_module, "_load_png", lambda *a: decoded.append(a) or None)
    again = read_omniglot(tmp_path / "data", cache_dir=tmp_path / "cache")  # from the cache
    assert not decoded and all(torch.equal(images[k], again[k]) for k in images)
    # a replaced image makes the cached copy stale
    png = root / "images_background" / "Beta" / "character01" / "0001_03.png"
    Image.fromarray(np.zeros((105, 105), dtype=bool)).save(png)
    monkeypatch.undo()
    fresh = read_omniglot(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert fresh["Beta/character01"][2].float().mean() > 200  # all strokes now
    assert torch.equal(fresh["Alpha/character01"], images["Alpha/character01"])


def test_zips_are_unpacked_into_the_cache_never_beside_them_and_shared_characters_read_once(
    tmp_path,
):
    src = tmp_path / "src"
    write_set(src / "images_background_small1", {"Greek": 2, "Korean": 1})
    write_set(src / "images_background_small2", {"Greek": 2, "Tagalog": 1})
    zips = tmp_path / "zips"
    zips.mkdir()
    for name in ("images_background_small1", "images_background_small2"):
        zip_folder(src / name, zips / f"{name}.zip")
    zips.chmod(0o555)  # read-only, as ../shared is
    try:
        images = read_omniglot(zips, cache_dir=tmp_path / "cache")
    finally:
        zips.chmod(0o755)
    assert sorted(p.name for p in zips.iterdir()) == [
        "images_background_small1.zip", "images_background_small2.zip",
    ]  # fmt: skip
    assert sorted(images) == [
        "Greek/character01", "Greek/character02", "Korean/character01", "Tagalog/character01",
    ]  # fmt: skip
    assert images["Greek/character01"].shape[0] == 20  # once, not both copies' drawers
    assert (tmp_path / "cache" / "omniglot").is_dir()


def test_a_missing_or_empty_folder_says_what_layout_is_expected(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="no Omniglot folder at .*omniglot-py/images_background"
    ):
        read_omniglot(tmp_path / "nowhere", cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError, match="no Omniglot images under .*expected the torchvision"
    ):
        read_omniglot(tmp_path / "empty", cache_dir=tmp_path)


def test_the_maml_split_shuffles_1623_characters_by_a_fixed_seed():
    keys = [f"A{a:02d}/character{c:02d}" for a in range(50) for c in range(1, 34)][
        :FULL_SET_CHARACTERS
    ]
    split = omniglot_splits(keys)  # auto: the full set
    assert [len(split[k]) for k in ("train", "validation", "test")] == [1100, 100, 423]
    assert set().union(*split.values()) == set(keys)
    assert split == omniglot_splits(list(reversed(keys)), "maml")  # order-free, seeded
    assert split["train"][:3] != sorted(keys)[:3]  # shuffled


def test_alphabet_splits_hold_whole_alphabets_out_and_bad_splits_are_named():
    keys = [f"{a}/character{c:02d}" for a in ("A", "B", "C", "D") for c in range(1, 4)]
    split = omniglot_splits(keys, {"validation": ["B"], "test": ["C", "D"]})
    assert {k.split("/")[0] for k in split["train"]} == {"A"}
    assert {k.split("/")[0] for k in split["test"]} == {"C", "D"}
    with pytest.raises(ValueError, match="neither the full set nor the minimal subsets"):
        omniglot_splits(keys)
    with pytest.raises(ValueError, match=r"names alphabets the folder does not hold: \['Z'\]"):
        omniglot_splits(keys, {"validation": ["Z"], "test": ["C"]})
    with pytest.raises(ValueError, match="split 'maml' needs more than 1200 characters"):
        omniglot_splits(keys, "maml")
    with pytest.raises(ValueError, match=r"alphabets \['B'\] are in both the validation and"):
        omniglot_splits(keys, {"validation": ["B"], "test": ["B", "C"]})
    with pytest.raises(ValueError, match=r"leaves \['train'\] without characters"):
        omniglot_splits(keys, {"validation": ["A", "B"], "test": ["C", "D"]})


def test_auto_takes_the_alphabet_split_only_for_the_minimal_subsets():
    minimal = [f"{a}/character01" for a in MINIMAL_ALPHABETS]
    assert omniglot_splits(minimal)["test"] == ["Korean/character01", "Tagalog/character01"]
    background = minimal + [f"Other{i}/character01" for i in range(30)]  # e.g. images_background
    with pytest.raises(ValueError, match="neither the full set nor the minimal subsets"):
        omniglot_splits(background)


def test_rotations_are_classes_of_their_own(tmp_path):
    write_set(tmp_path / "d" / "images_background", {"A": 3, "B": 2, "C": 2})
    tasks = omniglot(
        tmp_path / "d", ways=2, shots=1, query=1, split={"validation": ["B"], "test": ["C"]},
        cache_dir=tmp_path / "cache",
    )  # fmt: skip
    train = tasks.splits["train"]
    assert train.num_classes == 12 and train.names[:2] == [
        "A/character01/rot0",
        "A/character01/rot90",
    ]
    base = train.images[train.offsets[0] : train.offsets[0] + 20]
    turned = train.images[train.offsets[1] : train.offsets[1] + 20]
    assert torch.equal(turned, torch.rot90(base, 1, dims=(-2, -1)))
    assert tasks.characters == {"train": 3, "validation": 2, "test": 2}


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the real Omniglot subsets are not at {SHARED}")
def test_the_minimal_subsets_split_by_whole_alphabets(tmp_path):
    tasks = omniglot(SHARED, ways=5, shots=1, query=5, cache_dir=tmp_path)
    # 8 alphabets and 242 distinct characters (Greek and Latin are in both zips)
    assert tasks.characters == {"train": 163, "validation": 22, "test": 57}
    names = {k: {n.split("/")[0] for n in s.names} for k, s in tasks.splits.items()}
    assert names["validation"] == set(MINIMAL_SPLIT["validation"])
    assert names["test"] == set(MINIMAL_SPLIT["test"])
    assert not names["train"] & (names["validation"] | names["test"])
    assert tasks.splits["train"].images.shape == (163 * 4 * 20, 1, 28, 28)
    support = tasks.sample(4, torch.Generator().manual_seed(0)).support[0]
    assert support.shape == (4, 5, 1, 28, 28) and 0.05 < support.mean() < 0.3
