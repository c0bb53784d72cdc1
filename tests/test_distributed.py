"""common.distributed: episode sharding, and (slow) a 2-process gloo run of train.py under torchrun."""
from __future__ import annotations

import pytest
import torch

from common.distributed import DistInfo, EpisodeSampler, local_batch_size, seed_for


@pytest.mark.parametrize("length,world", [(10, 2), (11, 2), (7, 3), (1, 2)])
def test_eval_sharding_covers_every_episode_once(length, world):
    shards = [EpisodeSampler(length, rank=r, world_size=world).indices() for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(length))
    assert [len(EpisodeSampler(length, rank=r, world_size=world)) for r in range(world)] == [len(s) for s in shards]


def test_train_sharding_pads_shuffles_per_epoch_and_agrees_across_ranks():
    samplers = [EpisodeSampler(11, rank=r, world_size=2, shuffle=True, pad=True, seed=5) for r in range(2)]
    first = [s.indices() for s in samplers]
    assert [len(x) for x in first] == [6, 6] and set(first[0]) | set(first[1]) == set(range(11))
    for s in samplers:
        s.set_epoch(1)
    assert [s.indices() for s in samplers] != first
    single = EpisodeSampler(11, shuffle=True, seed=5)
    assert sorted(single.indices()) == list(range(11)) and len(single) == 11


def test_local_batch_and_seeds():
    assert local_batch_size(8, DistInfo(rank=0, world_size=2, distributed=True)) == 4
    with pytest.raises(ValueError, match="--bsz 5"):
        local_batch_size(5, DistInfo(rank=0, world_size=2, distributed=True))
    assert seed_for(3, 1) != seed_for(3, 2) and 0 <= seed_for(10**9, 10**6) < 2**31


def test_meter_all_reduce_is_noop_without_group():
    from common.evaluation import IoUMeter

    meter = IoUMeter([0], 20)
    meter.update(torch.ones(2, 1), torch.ones(2, 1), torch.tensor([0]), 1.0)
    meter.all_reduce()
    assert meter.compute_iou() == (100.0, 100.0)
