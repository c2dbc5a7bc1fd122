"""N-way K-shot image classification episodes, assembled by indexing images held in memory.

An :class:`ImageClasses` holds every image of a split as one uint8 tensor ``(N, C, H, W)``,
grouped by class. :class:`FewShotClassification` draws episodes from it: per task, ``ways``
classes without replacement, then ``shots + query`` images of each class without replacement,
labelled 0..ways-1 in a random order. Index sampling is vectorised over the meta-batch and
seeded by the caller's generator; only the chosen images are converted to float.

Example::

    tasks = FewShotClassification(train, validation, test, ways=5, shots=1, query=15)
    batch = tasks.sample(32, torch.Generator().manual_seed(0))
    images, labels = batch.support         # (32, 5, 1, 28, 28) float, (32, 5) long
    heldout = tasks.test_tasks(600)        # Episodes: fixed, seeded; images built per chunk
    heldout.select(slice(0, 100)).query    # the query images and labels of 100 test episodes
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pyro_gem.core.batch import TaskBatch
from pyro_gem.evaluation.classification import Accuracy, CalibrationError, PredictiveNLL
from pyro_gem.tasks.base import TaskFamily

__all__ = ["Episodes", "FewShotClassification", "ImageClasses"]


@dataclass
class ImageClasses:
    """The images of one split, grouped by class, as one uint8 tensor.

    :param images: ``(N, C, H, W)`` uint8, the images of class ``c`` at
        ``offsets[c] : offsets[c] + counts[c]``.
    :param counts: images per class, ``(num_classes,)``.
    :param names: one name per class (e.g. ``"Greek/character01/rot90"``).
    """

    images: torch.Tensor
    counts: torch.Tensor
    names: list[str]

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 tensor (N, C, H, W), got {self.images.dtype} of shape "
                f"{tuple(self.images.shape)}"
            )
        self.counts = torch.as_tensor(self.counts, dtype=torch.long)
        if len(self.names) != len(self.counts) or int(self.counts.sum()) != len(self.images):
            raise ValueError(
                f"{len(self.names)} class names and {len(self.counts)} counts summing to "
                f"{int(self.counts.sum())} do not describe {len(self.images)} images"
            )
        self.offsets = torch.cumsum(self.counts, 0) - self.counts

    @classmethod
    def from_groups(cls, groups: Sequence[torch.Tensor], names: Sequence[str]) -> ImageClasses:
        """One split from a uint8 tensor ``(n_c, C, H, W)`` per class."""
        if not groups:
            raise ValueError("no classes to build a split from")
        counts = torch.tensor([len(g) for g in groups])
        return cls(torch.cat(list(groups)), counts, list(names))

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def _draw_indices(
    split: ImageClasses, num_tasks: int, ways: int, per_class: int, generator
) -> torch.Tensor:
    """Image indices ``(T, ways, per_class)``: ``ways`` distinct classes per task (in random
    order: class j of the episode gets label j), ``per_class`` distinct images of each."""
    # A random permutation per task is the argsort of uniform keys; its first entries are a
    # uniform draw without replacement.
    classes = torch.rand(num_tasks, split.num_classes, generator=generator).argsort(-1)[:, :ways]
    counts = split.counts[classes]  # (T, ways)
    keys = torch.rand(num_tasks, ways, int(split.counts.max()), generator=generator)
    keys.masked_fill_(torch.arange(keys.shape[-1]) >= counts[..., None], 2.0)  # past the end
    picks = keys.argsort(-1)[..., :per_class]
    return split.offsets[classes][..., None] + picks


class Episodes:
    """A fixed set of episodes held as image indices: :meth:`select` builds the images of the
    episodes it is asked for, so that 600 miniImageNet test episodes never sit in memory as
    floats at once. It serves wherever a :class:`~pyro_gem.core.batch.TaskBatch` of held-out
    tasks is read by chunks (the meta-test); :attr:`support` and :attr:`query` build them all.

    :param family: the task family whose images and settings the episodes use.
    :param split: the split the indices point into.
    :param indices: ``(T, ways, shots + query)`` image indices.
    """

    def __init__(self, family: FewShotClassification, split: ImageClasses, indices: torch.Tensor):
        self.family, self.split, self.indices = family, split, indices
        self.info: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def validate(self) -> int:
        """The number of episodes (they are valid by construction)."""
        return len(self)

    def select(self, index: torch.Tensor | slice) -> TaskBatch:
        """The episodes at ``index`` as a :class:`~pyro_gem.core.batch.TaskBatch`."""
        return self.family.episodes(self.split, self.indices[index])

    @property
    def support(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.select(slice(None)).support

    @property
    def query(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.select(slice(None)).query


class FewShotClassification(TaskFamily):
    """N-way K-shot classification episodes from a train, a validation and a test split.

    :meth:`sample` draws meta-training episodes from ``train``; :meth:`validation_tasks` (the
    held-out curve during training) and :meth:`test_tasks` (the meta-test) are fixed, seeded
    sets from ``validation`` and ``test``. Images are scaled to [0, 1], then standardised per
    channel by ``mean`` and ``std`` when given.

    :param train: the meta-training classes.
    :param validation: the validation classes.
    :param test: the meta-test classes.
    :param ways: classes per episode (N).
    :param shots: support images per class (K).
    :param query: query images per class.
    :param mean: per-channel mean to subtract after scaling to [0, 1].
    :param std: per-channel standard deviation to divide by.
    :param calibration_bins: equal-width confidence bins of the calibration errors.
    :raises ValueError: if a split has fewer classes than ``ways``, or a class fewer images than
        ``shots + query`` (naming them), or the splits' images differ in shape.
    """

    def __init__(
        self,
        train: ImageClasses,
        validation: ImageClasses,
        test: ImageClasses,
        ways: int = 5,
        shots: int = 1,
        query: int = 15,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        calibration_bins: int = 15,
    ):
        for name, value in (("ways", ways), ("shots", shots), ("query", query)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.ways, self.shots, self.query = int(ways), int(shots), int(query)
        self.splits = {"train": train, "validation": validation, "test": test}
        shape = train.image_shape
        for name, split in self.splits.items():
            if split.image_shape != shape:
                raise ValueError(
                    f"the {name} images are {split.image_shape}, the train images {shape}"
                )
            if split.num_classes < self.ways:
                raise ValueError(
                    f"ways={self.ways} but the {name} split has only {split.num_classes} classes"
                )
            short = (split.counts < self.shots + self.query).nonzero().flatten().tolist()
            if short:
                listed = ", ".join(f"{split.names[c]} ({int(split.counts[c])})" for c in short[:5])
                raise ValueError(
                    f"{len(short)} {name} classes have fewer images than shots + query = "
                    f"{self.shots} + {self.query}: {listed}{', ...' if len(short) > 5 else ''}"
                )
        self.image_shape = shape
        channels = shape[0]
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32)
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v is not None and v.shape != (channels,):
                raise ValueError(f"{name} needs {channels} values (one per channel), got {v}")
        self.metrics = (Accuracy(), PredictiveNLL(), CalibrationError(calibration_bins))

    def images(self, split: ImageClasses, index: torch.Tensor) -> torch.Tensor:
        """The images at ``index`` as floats ``(*index.shape, C, H, W)``, scaled and
        standardised as the family's model sees them."""
        x = split.images[index].float().div_(255)
        if self.mean is not None:
            x = x.sub_(self.mean[:, None, None])
        if self.std is not None:
            x = x.div_(self.std[:, None, None])
        return x

    def episodes(self, split: ImageClasses, indices: torch.Tensor) -> TaskBatch:
        """Episodes from image indices ``(T, ways, shots + query)``: support and query images
        ``(T, ways · n, C, H, W)``, class-major, with labels ``(T, ways · n)``."""
        num_tasks = len(indices)
        labels = torch.arange(self.ways)

        def part(idx):
            n = idx.shape[-1]
            return (
                self.images(split, idx.reshape(num_tasks, -1)),
                labels.repeat_interleave(n).expand(num_tasks, -1),
            )

        k = self.shots
        return TaskBatch(part(indices[..., :k]), part(indices[..., k:]))

    def draw(self, split: str, num_tasks: int, generator: torch.Generator | None = None):
        """Image indices of ``num_tasks`` new episodes of ``split``, ``(T, ways, shots+query)``."""
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        images = self.splits[split]
        return _draw_indices(images, num_tasks, self.ways, self.shots + self.query, generator)

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """Draw ``num_tasks`` new meta-training episodes."""
        return self.episodes(self.splits["train"], self.draw("train", num_tasks, generator))

    def test_tasks(self, num_tasks: int = 600, seed: int | None = None) -> Episodes:
        """A fixed set of meta-test episodes, the same on every call with the same seed."""
        return self._fixed("test", num_tasks, self.test_seed if seed is None else seed)

    def validation_tasks(self, num_tasks: int = 100, seed: int | None = None) -> Episodes:
        """A fixed set of validation episodes (the held-out curve during training)."""
        return self._fixed("validation", num_tasks, self.test_seed + 1 if seed is None else seed)

    def _fixed(self, split: str, num_tasks: int, seed: int) -> Episodes:
        gen = torch.Generator().manual_seed(seed)
        return Episodes(self, self.splits[split], self.draw(split, num_tasks, gen))

    def check_data(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Check a user's episodes before adapting to them or predicting for them.

        :param images: ``(T, n, C, H, W)`` float images, scaled as the family's own.
        :param labels: ``(T, n)`` integer labels in 0..ways-1.
        :raises ValueError: naming what is wrong.
        """
        c, h, w = self.image_shape
        if not torch.is_tensor(images) or images.dim() != 5:
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(
                f"images must be a tensor (tasks, images, {c}, {h}, {w}), got {shape}; "
                "one episode is images[None]"
            )
        if tuple(images.shape[2:]) != (c, h, w):
            what = "channels" if images.shape[2] != c else "size"
            raise ValueError(
                f"images have the wrong {what}: got {tuple(images.shape[2:])} per image, this "
                f"task family's model takes ({c}, {h}, {w}) (channels, height, width)"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"images are {images.dtype}: pass floats scaled as the family's own "
                "(FewShotClassification.images: [0, 1], then standardised by mean and std)"
            )
        if labels is None:
            return
        if labels.shape != images.shape[:2]:
            raise ValueError(
                f"labels of shape {tuple(labels.shape)} do not match images of shape "
                f"{tuple(images.shape)}: one label per image, (tasks, images)"
            )
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integers 0..{self.ways - 1}, got {labels.dtype}")
        bad = (labels < 0) | (labels >= self.ways)
        if bad.any():
            raise ValueError(
                f"labels must lie in 0..{self.ways - 1} (ways={self.ways}), got "
                f"{sorted(set(labels[bad].tolist()))[:10]}"
            )
