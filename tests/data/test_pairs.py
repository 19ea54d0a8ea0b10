"""Pair planning: which images pair up, in which batches, and which shard measures which batch."""

from __future__ import annotations

import pytest
import torch

from hf_plasticity.data.pairs import DEFAULT_MAX_PAIRS, make_pair_batches
from hf_plasticity.errors import InvalidInputError, NotEnoughPairsError
from tests.conftest import pixels


def _all(batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches.batches, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_pairs_within_one_data_set_are_disjoint_draws() -> None:
    data = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    x, y = _all(make_pair_batches(data, num_pairs=5, batch_size=2, seed=0))
    ids = torch.cat([x[:, 0, 0, 0], y[:, 0, 0, 0]]).long().tolist()
    assert len(ids) == 10 and sorted(ids) == list(range(10))  # every image used once: x and y never share one


def test_reference_supplies_x_and_data_supplies_y() -> None:
    ref, data = torch.zeros(6, 3, 2, 2), torch.ones(6, 3, 2, 2)
    x, y = _all(make_pair_batches(data, ref, num_pairs=4, batch_size=3, seed=1))
    assert torch.all(x == 0) and torch.all(y == 1) and len(x) == 4


def test_the_seed_fixes_the_pairs() -> None:
    data = pixels(12, seed=3)
    first = _all(make_pair_batches(data, num_pairs=6, batch_size=4, seed=7))
    again = _all(make_pair_batches(data, num_pairs=6, batch_size=4, seed=7))
    other = _all(make_pair_batches(data, num_pairs=6, batch_size=4, seed=8))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


def test_shards_split_the_batches_and_cover_every_pair_once() -> None:
    data = pixels(20, seed=4)
    whole = _all(make_pair_batches(data, num_pairs=10, batch_size=3, seed=0))
    shards = [make_pair_batches(data, num_pairs=10, batch_size=3, seed=0, rank=r, world_size=2) for r in range(2)]
    parts = [_all(s) for s in shards]
    assert [s.batch_ids for s in shards] == [[0, 2], [1, 3]]
    assert [s.batch_ranges for s in shards] == [[(0, 3), (6, 9)], [(3, 6), (9, 10)]]
    assert shards[0].plan == shards[1].plan
    rebuilt = torch.cat([parts[0][0][:3], parts[1][0][:3], parts[0][0][3:], parts[1][0][3:]])
    assert torch.equal(rebuilt, whole[0])


def test_default_number_of_pairs_is_what_the_data_allow() -> None:
    batches = make_pair_batches(pixels(9, seed=0), num_pairs=None, batch_size=4, seed=0)
    assert batches.num_pairs == min(4, DEFAULT_MAX_PAIRS)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_pairs": 6}, NotEnoughPairsError, "asked for 6 pairs"),
        ({"num_pairs": 2.0}, InvalidInputError, "num_pairs"),
        ({"num_pairs": 2, "batch_size": 0}, InvalidInputError, "batch_size"),
    ],
    ids=["too-many-pairs", "float-pairs", "zero-batch"],
)
def test_bad_plans_are_refused(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make_pair_batches(pixels(10, seed=0), **{"batch_size": 2, "seed": 0, **kwargs})
