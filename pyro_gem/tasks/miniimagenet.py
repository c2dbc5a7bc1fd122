"""miniImageNet (Vinyals et al., 2016; Ravi & Larochelle's split: 64 / 16 / 20 classes of 600
images) few-shot episodes, from a copy the user names.

Reads either format people have:

- **CSV**: ``train.csv``, ``val.csv``, ``test.csv`` (columns ``filename,label``) beside an
  ``images/`` folder (Ravi & Larochelle's layout); images are resized to 84×84 (bilinear).
- **pickle**: ``mini-imagenet-cache-{train,val,test}.pkl``, each a dict with ``image_data``
  ``(N, 84, 84, 3)`` uint8 and ``class_dict`` ``{class: [indices]}`` (the widely shared caches).

Images are held as one uint8 tensor per split, RGB ``(3, 84, 84)``, and standardised per channel
by :data:`MEAN` and :data:`STD` when an episode is assembled. A CSV copy is decoded once and
cached (see :mod:`pyro_gem.tasks.cache`). Nothing is downloaded.
:func:`write_fixture` writes a small synthetic copy in either format (the tests and
``benchmarks/miniimagenet.py --quick`` use it; no real miniImageNet is on these machines).

Example::

    tasks = miniimagenet("~/data/miniimagenet", ways=5, shots=1, query=15)
    images, labels = tasks.sample(4, torch.Generator().manual_seed(0)).support  # (4, 5, 3, 84, 84)
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import torch

from pyro_gem.tasks.cache import cache_directory, fingerprint, save_atomically
from pyro_gem.tasks.fewshot import FewShotClassification, ImageClasses

__all__ = ["MEAN", "STD", "miniimagenet", "read_miniimagenet", "write_fixture"]

#: Per-channel mean and standard deviation of miniImageNet's training images on the [0, 1]
#: scale (the constants of MetaOptNet's and many others' loaders).
MEAN = (120.39586422 / 255, 115.59361427 / 255, 104.54012653 / 255)
STD = (70.68188272 / 255, 68.27635443 / 255, 72.54505529 / 255)

SIZE = 84
SPLITS = {"train": "train", "validation": "val", "test": "test"}
LAYOUT = (
    "expected train.csv, val.csv, test.csv (columns filename,label) beside an images/ folder, "
    "or mini-imagenet-cache-train.pkl, -val.pkl, -test.pkl (image_data (N, 84, 84, 3) uint8 "
    "and class_dict)"
)


def _from_arrays(image_data: np.ndarray, class_dict: dict, where: str) -> ImageClasses:
    image_data = np.asarray(image_data)
    if image_data.dtype != np.uint8 or image_data.ndim != 4 or image_data.shape[-1] != 3:
        raise ValueError(
            f"{where}: image_data must be uint8 (N, H, W, 3), got {image_data.dtype} "
            f"{image_data.shape}"
        )
    images = torch.from_numpy(image_data).permute(0, 3, 1, 2)
    names = sorted(class_dict)
    groups = [images[torch.as_tensor(list(class_dict[n]), dtype=torch.long)] for n in names]
    return ImageClasses.from_groups(groups, names)


def _read_pickle(path: Path, where: str) -> ImageClasses:
    with open(path, "rb") as f:
        data = pickle.load(f)
    if not isinstance(data, dict) or not {"image_data", "class_dict"} <= set(data):
        raise ValueError(f"{where}: expected a dict with 'image_data' and 'class_dict'")
    return _from_arrays(data["image_data"], data["class_dict"], where)


def _read_csv(table: Path, images_dir: Path, cache: Path) -> ImageClasses:
    from PIL import Image

    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"filename", "label"} <= set(rows[0]):
        raise ValueError(f"{table}: expected a header filename,label and one row per image")
    files = [images_dir / r["filename"] for r in rows]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} images named in {table} are missing: {missing[:3]}"
        )
    stamp = fingerprint([table, *files], "miniimagenet", SIZE)
    processed = cache / "miniimagenet" / f"{table.stem}-{stamp}.pt"
    if processed.is_file():
        saved = torch.load(processed, weights_only=True)
        return ImageClasses(saved["images"], saved["counts"], saved["names"])
    by_class: dict[str, list[Path]] = {}
    for r, p in zip(rows, files):
        by_class.setdefault(r["label"], []).append(p)
    groups, names = [], sorted(by_class)
    for name in names:
        arrays = []
        for p in by_class[name]:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if im.size != (SIZE, SIZE):
                    im = im.resize((SIZE, SIZE), resample=Image.BILINEAR)
                arrays.append(np.asarray(im, dtype=np.uint8))
        groups.append(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))
    split = ImageClasses.from_groups(groups, names)
    save_atomically(
        {"images": split.images, "counts": split.counts, "names": split.names}, processed
    )
    return split


def read_miniimagenet(
    path: str | Path, cache_dir: str | Path | None = None
) -> dict[str, ImageClasses]:
    """The three splits of a miniImageNet copy, ``{"train", "validation", "test"}``.

    :param path: the folder holding the CSV files and ``images/``, or the pickles.
    :param cache_dir: where decoded CSV copies are cached.
    :raises FileNotFoundError: if the folder holds neither format (the message says what is
        expected).
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"no miniImageNet folder at {path}: {LAYOUT}")
    pickles = {k: path / f"mini-imagenet-cache-{v}.pkl" for k, v in SPLITS.items()}
    if all(p.is_file() for p in pickles.values()):
        return {k: _read_pickle(p, str(p)) for k, p in pickles.items()}
    tables = {k: path / f"{v}.csv" for k, v in SPLITS.items()}
    if all(p.is_file() for p in tables.values()) and (path / "images").is_dir():
        cache = cache_directory(cache_dir)
        return {k: _read_csv(p, path / "images", cache) for k, p in tables.items()}
    found = sorted(p.name for p in path.iterdir())[:10]
    raise FileNotFoundError(f"no miniImageNet copy in {path} (it holds {found}): {LAYOUT}")


def miniimagenet(
    path: str | Path,
    ways: int = 5,
    shots: int = 1,
    query: int = 15,
    cache_dir: str | Path | None = None,
    calibration_bins: int = 15,
) -> FewShotClassification:
    """miniImageNet N-way K-shot episodes from the folder ``path`` (see the module docstring).

    :param path: the folder holding either format.
    :param ways: classes per episode.
    :param shots: support images per class.
    :param query: query images per class.
    :param cache_dir: where decoded CSV copies are cached.
    :param calibration_bins: confidence bins of the calibration errors.
    """
    splits = read_miniimagenet(path, cache_dir)
    return FewShotClassification(
        splits["train"],
        splits["validation"],
        splits["test"],
        ways=ways,
        shots=shots,
        query=query,
        mean=MEAN,
        std=STD,
        calibration_bins=calibration_bins,
    )


def write_fixture(
    path: str | Path,
    fmt: str = "csv",
    classes: tuple[int, int, int] = (8, 5, 5),
    per_class: int = 20,
    size: int = SIZE,
    seed: int = 0,
) -> Path:
    """Write a small synthetic miniImageNet copy in ``fmt`` (``"csv"`` or ``"pickle"``).

    Each class is a colour and a stripe orientation of its own under pixel noise, so that a
    network can learn something from it; it is a stand-in for tests, not data.

    :param classes: classes of the train, validation and test splits.
    :param per_class: images per class.
    :param size: the images' side (84 as the real data; another size tests the resizing).
    :returns: ``path``.
    """
    if fmt not in ("csv", "pickle"):
        raise ValueError(f"fmt must be 'csv' or 'pickle', got {fmt!r}")
    from PIL import Image

    rng = np.random.default_rng(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    start = 0
    for (_, name), count in zip(SPLITS.items(), classes):
        labels = [f"n{start + c:08d}" for c in range(count)]
        start += count
        images = []
        for _class in range(count):
            colour = rng.uniform(40, 215, size=3)
            angle = rng.uniform(0, np.pi)
            stripes = np.sin(12 * (np.cos(angle) * xx + np.sin(angle) * yy))[..., None]
            for _ in range(per_class):
                noise = rng.normal(0, 25, size=(size, size, 3))
                pixels = colour + 30 * stripes + noise
                images.append(np.clip(pixels, 0, 255).astype(np.uint8))
        image_data = np.stack(images)
        owners = [lab for lab in labels for _ in range(per_class)]
        if fmt == "pickle":
            class_dict = {lab: [i for i, o in enumerate(owners) if o == lab] for lab in labels}
            with open(path / f"mini-imagenet-cache-{name}.pkl", "wb") as f:
                pickle.dump({"image_data": image_data, "class_dict": class_dict}, f)
            continue
        (path / "images").mkdir(exist_ok=True)
        with open(path / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            for i, (img, lab) in enumerate(zip(image_data, owners)):
                filename = f"{lab}{i:08d}.jpg"
                Image.fromarray(img).save(path / "images" / filename, quality=95, subsampling=0)
                writer.writerow([filename, lab])
    return path
