"""Batches of similar length in random order: most of a batch's compute is no longer padding, and no run of steps
sees only short or only long rows.

transformers' `LengthGroupedSampler` sorts each megabatch (50 batches) longest first, so within every 50 steps
the batches go from the longest rows to the shortest: on the quickstart's mix of captions and short answers, the
last steps of each window were answers alone and the SFT model learned to stop early (recall 0.24 instead of
0.9). Here the batches are cut the same way and then shuffled.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

MEGABATCH = 50  # batches sorted together: larger groups lengths more tightly, smaller keeps batches more mixed


class ShuffledLengthGroups(Sampler[int]):
    """Indices whose consecutive runs of `batch_size` hold rows of similar `lengths`, those runs in a random
    order (a fresh one each epoch, from `seed` and the epoch: `set_epoch`, as the Trainer calls it). A last,
    smaller batch comes last, so every other batch is whole."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, megabatch: int = MEGABATCH):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths, self.batch_size, self.seed, self.megabatch = list(lengths), batch_size, seed, megabatch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.batch_size * self.megabatch
        groups: list[list[int]] = []
        for start in range(0, len(order), size):
            mega = sorted(order[start:start + size], key=lambda i: -self.lengths[i])
            groups += [mega[k:k + self.batch_size] for k in range(0, len(mega), self.batch_size)]
        whole = [g for g in groups if len(g) == self.batch_size]
        rest = [i for g in groups if len(g) < self.batch_size for i in g]
        shuffled = [whole[k] for k in torch.randperm(len(whole), generator=generator).tolist()]
        return shuffled + ([rest] if rest else [])

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch


class LengthGroupsMixin:
    """For a Trainer: `train_sampling_strategy: group_by_length` uses `ShuffledLengthGroups` over the dataset's
    `length` column (the token lengths align measured while checking the rows); every other strategy, or a
    dataset without the column, is transformers' own."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        column = self.args.length_column_name
        if self.args.train_sampling_strategy != "group_by_length" or column not in dataset.column_names:
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return ShuffledLengthGroups(dataset[column], self.args.train_batch_size, seed=seed)
