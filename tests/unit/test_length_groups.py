"""ShuffledLengthGroups: batches of similar length, in random order, every row once per epoch."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from align.train.length_groups import ShuffledLengthGroups  # noqa: E402


def _lengths():
    # 3 short answers for every caption, as the quickstart's SFT mix: 300 x 20 tokens, 100 x 100-130 tokens
    return [20 if i % 4 else 100 + i % 31 for i in range(400)]


def test_every_row_once_in_whole_batches_of_one_kind():
    lengths = _lengths()
    sampler = ShuffledLengthGroups(lengths, batch_size=10, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(400)) and len(sampler) == 400
    batches = [order[k:k + 10] for k in range(0, 400, 10)]
    mixed = [b for b in batches if len({lengths[i] == 20 for i in b}) > 1]
    # a megabatch of 50 x 10 rows holds every row here: at most one batch straddles the two kinds
    assert len(mixed) <= 1
    # padding: a random order pads ~96% of batches to a caption; grouped, only caption batches are long
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert padded < 0.5 * 400 * 130


def test_batches_are_shuffled_not_sorted_and_reshuffled_each_epoch():
    lengths = _lengths()
    sampler = ShuffledLengthGroups(lengths, batch_size=10, seed=0)
    first = sampler.batches()
    kinds = ["short" if lengths[b[0]] == 20 else "long" for b in first]
    # transformers' LengthGroupedSampler would put every long batch first; here both kinds reach both ends
    assert {"short", "long"} <= set(kinds[:10]) and {"short", "long"} <= set(kinds[-10:])
    assert first == ShuffledLengthGroups(lengths, batch_size=10, seed=0).batches()  # deterministic
    sampler.set_epoch(1)
    assert sampler.batches() != first
    assert ShuffledLengthGroups(lengths, batch_size=10, seed=1).batches() != first


def test_a_smaller_last_batch_comes_last():
    sampler = ShuffledLengthGroups([5] * 23, batch_size=10, seed=0)
    batches = sampler.batches()
    assert [len(b) for b in batches] == [10, 10, 3]
