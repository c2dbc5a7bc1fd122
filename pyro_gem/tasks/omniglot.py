"""Omniglot (Lake et al., 2015) few-shot episodes, from a folder the user names.

Reads the layout torchvision's ``Omniglot`` writes, ``omniglot-py/images_background`` and
``images_evaluation`` with one folder per alphabet and per character
(``<Alphabet>/<characterNN>/<id>_<drawer>.png``), or the zips of such sets
(``images_background*.zip``, e.g. the minimal subsets ``images_background_small1.zip`` and
``..._small2.zip``), which are unpacked into a cache directory, never beside the zips. Nothing
is downloaded.

Images are resized to 28×28 (Lanczos, as MAML) with the strokes bright on a dark background, and
every character gives four classes, its rotations by 0/90/180/270° (Santoro et al.,
2016; Vinyals et al., 2016; MAML instead rotates each sampled class by a random multiple of 90°
per episode). All images are held once in memory as one uint8 tensor.

Splits of the characters into meta-train / validation / test:

- ``"maml"`` (the full set): MAML's protocol, the 1,623 characters sorted by name, shuffled by
  ``random.Random(1)``, then 1,100 / 100 / the other 423.
- ``"minimal"`` (the two minimal subsets): whole alphabets held out, the harder and more honest
  choice: a test alphabet's characters share strokes the network has never seen.
  :data:`MINIMAL_SPLIT` lists them. The two zips both hold Greek and Latin (identical images):
  together they are 8 alphabets and 242 distinct characters, not 292.
- a dict ``{"validation": [alphabets], "test": [alphabets]}``: the rest are meta-train.

Example::

    tasks = omniglot("../shared/data/omniglot", ways=5, shots=1, query=15)   # split "minimal"
    batch = tasks.sample(32, torch.Generator().manual_seed(0))
    images, labels = batch.support                 # (32, 5, 1, 28, 28), (32, 5)
"""

from __future__ import annotations

import random
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from pyro_gem.tasks.cache import cache_directory, fingerprint, save_atomically
from pyro_gem.tasks.fewshot import FewShotClassification, ImageClasses

__all__ = ["MINIMAL_SPLIT", "omniglot", "omniglot_splits", "read_omniglot"]

#: The alphabets held out of meta-training on the minimal subsets (the rest, 163 characters of
#: Balinese, Greek, Japanese (katakana), Latin and Sanskrit, are meta-train): 22 + 57 characters,
#: about MAML's 6% / 26% of the full set's.
MINIMAL_SPLIT = {"validation": ["Early_Aramaic"], "test": ["Korean", "Tagalog"]}

#: The alphabets of the two minimal subsets together.
MINIMAL_ALPHABETS = {
    "Balinese", "Early_Aramaic", "Greek", "Japanese_(katakana)", "Korean", "Latin", "Sanskrit",
    "Tagalog",
}  # fmt: skip

#: MAML's split of the full set: the shuffle's seed and the meta-train / validation counts.
MAML_SEED, MAML_TRAIN, MAML_VALIDATION = 1, 1100, 100
FULL_SET_CHARACTERS = 1623

LAYOUT = (
    "expected the torchvision layout omniglot-py/images_background/<Alphabet>/<characterNN>/"
    "*.png (and images_evaluation), a folder of such image sets, or their zips "
    "(images_background.zip, images_background_small1.zip, ...)"
)


def _image_sets(path: Path, cache: Path) -> list[Path]:
    """The image-set folders (each holding alphabet folders) under ``path``, zips unpacked."""
    roots = [path, path / "omniglot-py"]
    sets: dict[str, Path] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for d in sorted(root.glob("images_*")):
            if d.is_dir():
                sets.setdefault(d.name, d)
        for z in sorted(root.glob("images_*.zip")):
            if z.stem in sets:
                continue  # unpacked beside it already (as torchvision leaves it)
            target = cache / "omniglot" / f"{z.stem}-{fingerprint([z])}"
            if not (target / ".complete").is_file():
                target.mkdir(parents=True, exist_ok=True)
                with zipfile.ZipFile(z) as archive:
                    archive.extractall(target)
                (target / ".complete").touch()
            inner = target / z.stem
            sets[z.stem] = inner if inner.is_dir() else target
    if not sets and any(p.is_dir() and any(p.glob("*/*.png")) for p in path.glob("*")):
        sets[path.name] = path  # a folder of alphabets itself
    return list(sets.values())


def _load_png(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L").resize((size, size), resample=Image.LANCZOS)
        return 255 - np.asarray(im, dtype=np.uint8)  # strokes bright, as MAML's 1 - x


def read_omniglot(
    path: str | Path, image_size: int = 28, cache_dir: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """Every character's images, ``{"Alphabet/characterNN": uint8 (drawers, 1, S, S)}``, sorted.

    A character found in two image sets (the minimal subsets share Greek and Latin) is read
    once. The result is cached in ``cache_dir`` (see
    :func:`~pyro_gem.tasks.cache.cache_directory`), keyed by every source file and
    ``image_size``.

    :param path: a folder holding ``omniglot-py/``, the image sets or their zips.
    :param image_size: the side the images are resized to.
    :param cache_dir: where zips are unpacked and the processed tensors kept.
    :raises FileNotFoundError: if there is no such folder or it holds no Omniglot images.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"no Omniglot folder at {path}: {LAYOUT}")
    cache = cache_directory(cache_dir)
    sets = _image_sets(path, cache)
    characters: dict[str, list[Path]] = {}
    for image_set in sets:
        for char_dir in sorted(image_set.glob("*/*")):
            files = sorted(char_dir.glob("*.png"))
            key = f"{char_dir.parent.name}/{char_dir.name}"
            if files and key not in characters:
                characters[key] = files
    if not characters:
        raise FileNotFoundError(f"no Omniglot images under {path}: {LAYOUT}")
    keys = sorted(characters)
    stamp = fingerprint((f for k in keys for f in characters[k]), "omniglot", image_size)
    processed = cache / "omniglot" / f"processed-{stamp}.pt"
    if processed.is_file():
        saved = torch.load(processed, weights_only=True)
        return dict(zip(saved["keys"], saved["images"]))
    out = {}
    for k in keys:
        arrays = np.stack([_load_png(f, image_size) for f in characters[k]])
        out[k] = torch.from_numpy(arrays)[:, None]
    save_atomically({"keys": keys, "images": [out[k] for k in keys]}, processed)
    return out


def omniglot_splits(
    characters: Sequence[str], split: str | Mapping[str, Sequence[str]] = "auto"
) -> dict[str, list[str]]:
    """The characters of each split, ``{"train", "validation", "test"}``.

    :param characters: ``"Alphabet/characterNN"`` keys.
    :param split: ``"maml"``, ``"minimal"``, a dict of held-out alphabets, or ``"auto"``:
        ``"maml"`` for the full set, ``"minimal"`` for the minimal subsets.
    :raises ValueError: for a split the characters cannot follow.
    """
    characters = sorted(characters)
    alphabets = sorted({c.split("/")[0] for c in characters})
    held = [a for names in MINIMAL_SPLIT.values() for a in names]
    if split == "auto":
        if len(characters) >= FULL_SET_CHARACTERS:
            split = "maml"
        elif all(a in alphabets for a in held) and set(alphabets) <= MINIMAL_ALPHABETS:
            split = "minimal"
        else:
            raise ValueError(
                f"{len(characters)} characters of {len(alphabets)} alphabets are neither the "
                f"full set nor the minimal subsets: pass split='maml' or a dict naming the "
                f"held-out alphabets, e.g. {{'validation': [...], 'test': [...]}} from {alphabets}"
            )
    if split == "maml":
        if len(characters) <= MAML_TRAIN + MAML_VALIDATION:
            raise ValueError(
                f"split 'maml' needs more than {MAML_TRAIN + MAML_VALIDATION} characters, the "
                f"folder holds {len(characters)}"
            )
        shuffled = list(characters)
        random.Random(MAML_SEED).shuffle(shuffled)
        n, v = MAML_TRAIN, MAML_TRAIN + MAML_VALIDATION
        return {"train": shuffled[:n], "validation": shuffled[n:v], "test": shuffled[v:]}
    held_out = MINIMAL_SPLIT if split == "minimal" else split
    if not isinstance(held_out, Mapping) or set(held_out) != {"validation", "test"}:
        raise ValueError(
            f"split must be 'auto', 'maml', 'minimal' or {{'validation': [...], 'test': [...]}} "
            f"(alphabets), got {split!r}"
        )
    missing = [a for names in held_out.values() for a in names if a not in alphabets]
    if missing:
        raise ValueError(f"split names alphabets the folder does not hold: {missing}")
    both = sorted(set(held_out["validation"]) & set(held_out["test"]))
    if both:
        raise ValueError(f"alphabets {both} are in both the validation and the test split")
    out = {name: [c for c in characters if c.split("/")[0] in held_out[name]] for name in held_out}
    taken = set(out["validation"]) | set(out["test"])
    out["train"] = [c for c in characters if c not in taken]
    empty = [name for name in ("train", "validation", "test") if not out[name]]
    if empty:
        raise ValueError(f"the split leaves {empty} without characters")
    return {"train": out["train"], "validation": out["validation"], "test": out["test"]}


def _with_rotations(images: Mapping[str, torch.Tensor], keys: Sequence[str]) -> ImageClasses:
    groups, names = [], []
    for key in keys:
        for k in range(4):
            groups.append(torch.rot90(images[key], k, dims=(-2, -1)))
            names.append(f"{key}/rot{90 * k}")
    return ImageClasses.from_groups(groups, names)


def omniglot(
    path: str | Path,
    ways: int = 5,
    shots: int = 1,
    query: int = 15,
    split: str | Mapping[str, Sequence[str]] = "auto",
    image_size: int = 28,
    cache_dir: str | Path | None = None,
    calibration_bins: int = 15,
) -> FewShotClassification:
    """Omniglot N-way K-shot episodes from the folder ``path`` (see the module docstring).

    :param path: a folder holding ``omniglot-py/``, the image sets or their zips.
    :param ways: classes per episode.
    :param shots: support images per class.
    :param query: query images per class (each character has 20, one per drawer).
    :param split: the characters' split (see :func:`omniglot_splits`).
    :param image_size: the side images are resized to.
    :param cache_dir: where zips are unpacked and processed images cached.
    :param calibration_bins: confidence bins of the calibration errors.
    """
    images = read_omniglot(path, image_size, cache_dir)
    splits = omniglot_splits(list(images), split)
    parts = {name: _with_rotations(images, keys) for name, keys in splits.items()}
    tasks = FewShotClassification(
        parts["train"],
        parts["validation"],
        parts["test"],
        ways=ways,
        shots=shots,
        query=query,
        calibration_bins=calibration_bins,
    )
    tasks.characters = {name: len(keys) for name, keys in splits.items()}
    return tasks
