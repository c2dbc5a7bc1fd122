import pytest
import torch

from pyro_gem.tasks.fewshot import Episodes, FewShotClassification, ImageClasses


def tagged_split(num_classes: int, per_class: int, offset: int = 0) -> ImageClasses:
    """Images whose first pixels say their class and their index within it."""
    groups = []
    for c in range(num_classes):
        g = torch.zeros(per_class, 1, 4, 4, dtype=torch.uint8)
        g[:, 0, 0, 0] = c + offset
        g[:, 0, 0, 1] = torch.arange(per_class)
        groups.append(g)
    return ImageClasses.from_groups(groups, [f"class{c + offset}" for c in range(num_classes)])


def family(ways=5, shots=2, query=3, **kw) -> FewShotClassification:
    return FewShotClassification(
        tagged_split(12, 8),
        tagged_split(6, 8, 100),
        tagged_split(7, 8, 200),
        ways,
        shots,
        query,
        **kw,
    )


def tags(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    raw = (images * 255).round().long()
    return raw[..., 0, 0, 0], raw[..., 0, 0, 1]  # class, index within the class


def test_episodes_draw_distinct_classes_and_images_labelled_by_class():
    tasks = family()
    batch = tasks.sample(40, torch.Generator().manual_seed(0))
    (xs, ys), (xq, yq) = batch.support, batch.query
    assert xs.shape == (40, 10, 1, 4, 4) and ys.shape == (40, 10)
    assert xq.shape == (40, 15, 1, 4, 4) and yq.shape == (40, 15)
    assert ys.dtype == torch.long and xs.dtype == torch.float32
    cs, is_ = tags(xs)
    cq, iq = tags(xq)
    for t in range(40):
        # every label is one class, the same in support and query; five distinct classes
        label_class = {int(y): int(c) for y, c in zip(ys[t], cs[t])}
        assert len(label_class) == 5 and len(set(label_class.values())) == 5
        assert all(label_class[int(y)] == int(c) for y, c in zip(yq[t], cq[t]))
        # no image twice in an episode: support and query are disjoint
        seen = list(zip(cs[t].tolist(), is_[t].tolist())) + list(
            zip(cq[t].tolist(), iq[t].tolist())
        )
        assert len(seen) == len(set(seen)) == 25
    assert cs.max() < 12  # drawn from the train split only


def test_sampling_covers_classes_and_images_uniformly():
    tasks = family(ways=3, shots=1, query=1)
    batch = tasks.sample(6000, torch.Generator().manual_seed(1))
    cls, idx = tags(batch.support[0])
    class_counts = torch.bincount(cls.flatten(), minlength=12).float()
    index_counts = torch.bincount(idx.flatten(), minlength=8).float()
    # 18,000 draws: 1,500 per class and 2,250 per image index expected
    assert (class_counts / 1500 - 1).abs().max() < 0.1
    assert (index_counts / 2250 - 1).abs().max() < 0.1


def test_episodes_are_seeded_and_test_episodes_fixed():
    tasks = family()
    a = tasks.sample(5, torch.Generator().manual_seed(3)).support[0]
    b = tasks.sample(5, torch.Generator().manual_seed(3)).support[0]
    c = tasks.sample(5, torch.Generator().manual_seed(4)).support[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    test = tasks.test_tasks(30)
    assert isinstance(test, Episodes) and len(test) == 30
    assert torch.equal(test.query[0], tasks.test_tasks(30).query[0])
    assert tags(test.support[0])[0].min() >= 200  # the test split
    assert tags(tasks.validation_tasks(10).support[0])[0].min() >= 100
    assert tags(tasks.validation_tasks(10).support[0])[0].max() < 200
    part = test.select(slice(4, 9))
    assert torch.equal(part.support[0], test.support[0][4:9])
    assert torch.equal(part.query[1], test.query[1][4:9])


def test_images_are_scaled_then_standardised_per_channel():
    split = ImageClasses.from_groups(
        [torch.full((6, 3, 2, 2), v, dtype=torch.uint8) for v in (0, 51, 255)], ["a", "b", "c"]
    )
    tasks = FewShotClassification(
        split, split, split, 2, 1, 1, mean=(0.2, 0.4, 0.6), std=(0.5, 1.0, 2.0)
    )
    x = tasks.images(split, torch.tensor([6]))  # class "b": 51/255 = 0.2
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([0.0, -0.2, -0.2]))


def test_classes_with_too_few_images_and_too_many_ways_are_named():
    short = ImageClasses.from_groups(
        [torch.zeros(n, 1, 4, 4, dtype=torch.uint8) for n in (8, 3, 8, 8, 8)], list("abcde")
    )
    ok = tagged_split(6, 8)
    with pytest.raises(
        ValueError, match=r"1 train classes have fewer images than shots \+ query = 2 \+ 3: b \(3\)"
    ):
        FewShotClassification(short, ok, ok, ways=3, shots=2, query=3)
    with pytest.raises(ValueError, match="ways=7 but the validation split has only 6 classes"):
        FewShotClassification(tagged_split(9, 8), ok, tagged_split(9, 8), ways=7, shots=1, query=1)
    with pytest.raises(ValueError, match="shots must be a positive integer"):
        FewShotClassification(ok, ok, ok, ways=2, shots=0)
    with pytest.raises(ValueError, match="the test images are"):
        bigger = ImageClasses.from_groups(
            [torch.zeros(8, 1, 5, 5, dtype=torch.uint8)] * 6, list("abcdef")
        )
        FewShotClassification(ok, ok, bigger, ways=2, shots=1, query=1)


@pytest.mark.parametrize(
    "images, labels, message",
    [
        (
            torch.rand(2, 10, 1, 5, 5),
            None,
            r"wrong size: got \(1, 5, 5\) per image, .* takes \(1, 4, 4\)",
        ),
        (torch.rand(2, 10, 3, 4, 4), None, r"wrong channels: got \(3, 4, 4\)"),
        (torch.rand(10, 1, 4, 4), None, r"images must be a tensor \(tasks, images, 1, 4, 4\)"),
        (torch.zeros(2, 10, 1, 4, 4, dtype=torch.uint8), None, "images are torch.uint8"),
        (
            torch.rand(2, 10, 1, 4, 4),
            torch.full((2, 10), 5),
            r"labels must lie in 0..4 \(ways=5\), got \[5\]",
        ),
        (torch.rand(2, 10, 1, 4, 4), -torch.ones(2, 10, dtype=torch.long), r"got \[-1\]"),
        (torch.rand(2, 10, 1, 4, 4), torch.zeros(2, 9, dtype=torch.long), "do not match images"),
        (torch.rand(2, 10, 1, 4, 4), torch.zeros(2, 10), "labels must be integers"),
    ],
)
def test_a_users_bad_episode_gets_an_error_naming_the_problem(images, labels, message):
    with pytest.raises(ValueError, match=message):
        family().check_data(images, labels)


def test_a_good_episode_passes_the_check():
    family().check_data(torch.rand(2, 10, 1, 4, 4), torch.arange(5).repeat(2, 2))
