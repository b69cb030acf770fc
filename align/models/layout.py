"""Shared layouts of a preference batch: the same per-token log-probs from fewer tokens.

A preference batch holds N rows flushed left ([N, T], real tokens first): chosen and rejected rows of each pair
repeat the same prompt and image tokens. `build_shared_layout` rearranges the rows' tokens into R packed rows
[R, W] of *sequences*:
- a pair sequence (prefix sharing) is [trunk, chosen branch, rejected branch]: the trunk holds the tokens the two
  rows have in common but the last, and each branch starts with that last common token, so that every slot has
  one next token to predict (the last common token predicts the chosen continuation in one branch and the
  rejected one in the other). Its images are the chosen row's: the image is encoded once for the pair.
- a single sequence is one row's tokens (rows that share nothing, mdpo's corrupted-image row, every row when
  prefix sharing is off).
With `padding_free`, sequences are packed first-fit into rows as wide as the longest sequence; else each sequence
is a row of its own.

A slot of a packed row attends to slot j of the same sequence when j comes no later and lies in the trunk or in
its own branch (`attention_allowed`), and takes the position id its token had in its unshared row, so every
token sees exactly the context and positions it saw unshared and its hidden state is the unshared one (up to
float rounding). `locations` maps every unshared token back to its slot, so per-token outputs come back in the
unshared [N, T] layout (`align.models.layout_forward`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch


def pack_rows(lengths: Sequence[int]) -> list[list[int]]:
    """Row indices per pack: first-fit, longest row first, into packs as wide as the longest row."""
    width = max(lengths)
    packs: list[list[int]] = []
    room: list[int] = []
    for row in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        k = next((k for k, free in enumerate(room) if free >= lengths[row]), None)
        if k is None:
            packs.append([])
            room.append(width)
            k = len(packs) - 1
        packs[k].append(row)
        room[k] -= lengths[row]
    return packs


@dataclass
class SharedLayout:
    """How one unshared batch [N, T] is laid out as packed rows [R, W] (see the module docstring).

    `sources` is None for a batch kept unshared (shared image encoding alone)."""

    sources: torch.Tensor | None = None  # [R, W] flat index n * T + t of the unshared token in each slot; -1: pad
    successors: torch.Tensor | None = None  # [R, W] flat index of the token the slot predicts (n, t + 1); -1: none
    sequence_ids: torch.Tensor | None = None  # [R, W] the slot's sequence within the batch; -1: pad
    branch_ids: torch.Tensor | None = None  # [R, W] 0: trunk (or a single sequence), 1 / 2: chosen / rejected branch
    locations: torch.Tensor | None = None  # [N, T] flat slot r * W + w of each unshared token; 0 past a row's end
    image_rows: list[int] = field(default_factory=list)  # unshared rows whose images the packed rows use, in order
    images_per_row: list[int] = field(default_factory=list)  # [N] images of each unshared row
    share_vision: bool = False  # encode each distinct image input once for every model call of the step
    # Filled during the step: (inputs, output) of the vision encoder's calls (align.models.layout_forward).
    vision_memo: list[Any] = field(default_factory=list, repr=False)

    @property
    def packed(self) -> bool:
        return self.sources is not None

    def to(self, device, *args, **kwargs) -> SharedLayout:
        """Moves the index tensors (accelerate calls `.to` on batch values that have it)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                setattr(self, f.name, value.to(device))
        return self

    def tokens(self) -> int:
        """Real tokens in the packed rows (0 when the batch is unshared)."""
        return int((self.sources >= 0).sum()) if self.packed else 0


def build_shared_layout(input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor,
                        pairs: Sequence[tuple[int, int]], padding_free: bool,
                        images_per_row: Sequence[int] = ()) -> SharedLayout:
    """The packed layout of a flushed-left batch (input_ids, attention_mask, completion_mask [N, T]).

    `pairs` are (chosen row, rejected row) index pairs that share their prompt and images, so that they become one
    pair sequence; every other row is a single sequence. A pair whose rows share no token is laid out as two
    singles. The trunk never runs past a token whose completion-mask value differs between the two rows, so every
    trunk slot predicts the same label for both."""
    n, width = input_ids.shape
    lengths = attention_mask.sum(dim=1).tolist()  # [N]
    if any(attention_mask[i, :length].sum() != length for i, length in enumerate(lengths)):
        raise ValueError("the batch is not flushed left (real tokens first); shared layouts need that")
    paired = {row for pair in pairs for row in pair}
    if len(paired) != 2 * len(pairs):
        raise ValueError(f"a row is in two pairs: {list(pairs)}")
    # Each sequence: list of (branch id, row, first token, end token) segments, and the row whose images it uses.
    sequences: list[tuple[list[tuple[int, int, int, int]], int]] = []
    singles = [r for r in range(n) if r not in paired]
    for c, r in pairs:
        lc, lr = lengths[c], lengths[r]
        same = (input_ids[c, :min(lc, lr)] == input_ids[r, :min(lc, lr)]) & \
               (completion_mask[c, :min(lc, lr)] == completion_mask[r, :min(lc, lr)])
        common = int(same.long().cumprod(0).sum())  # length of the common prefix
        # Both branches keep at least their last token (which predicts nothing), so the trunk ends one short of it.
        common = min(common, lc - 1, lr - 1)
        if common < 2:
            singles += [c, r]
            continue
        trunk_end = common - 1  # trunk [0, common - 1); both branches start at the last common token
        sequences.append(([(0, c, 0, trunk_end), (1, c, trunk_end, lc), (2, r, trunk_end, lr)], c))
    for row in sorted(singles):
        sequences.append(([(0, row, 0, lengths[row])], row))
    seq_lengths = [sum(end - start for _, _, start, end in segs) for segs, _ in sequences]
    packs = pack_rows(seq_lengths) if padding_free else [[s] for s in range(len(sequences))]
    rows_out, packed_width = len(packs), max(seq_lengths)
    sources = torch.full((rows_out, packed_width), -1, dtype=torch.long)
    successors = torch.full_like(sources, -1)
    sequence_ids = torch.full_like(sources, -1)
    branch_ids = torch.zeros_like(sources)
    locations = torch.zeros((n, width), dtype=torch.long)
    image_rows: list[int] = []
    for r_out, pack in enumerate(packs):
        w = 0
        for s in pack:
            segments, image_row = sequences[s]
            image_rows.append(image_row)
            trunk_rows = []
            for branch, row, start, end in segments:
                span = end - start
                t = torch.arange(start, end)
                sources[r_out, w:w + span] = row * width + t
                successors[r_out, w:w + span] = torch.where(t + 1 < lengths[row], row * width + t + 1, -1)
                sequence_ids[r_out, w:w + span] = s
                branch_ids[r_out, w:w + span] = branch
                locations[row, start:end] = r_out * packed_width + w + torch.arange(span)
                if branch == 0:
                    trunk_rows.append((start, end, w))
                else:
                    # The other row of the pair reads the trunk too.
                    for t_start, t_end, t_w in trunk_rows:
                        locations[row, t_start:t_end] = r_out * packed_width + t_w + torch.arange(t_end - t_start)
                w += span
    return SharedLayout(sources=sources, successors=successors, sequence_ids=sequence_ids, branch_ids=branch_ids,
                        locations=locations, image_rows=image_rows, images_per_row=list(images_per_row))


def attention_allowed(sequence_ids: torch.Tensor, branch_ids: torch.Tensor) -> torch.Tensor:
    """[R, W, W] bool: slot i (query) may attend to slot j (key). Same sequence, j no later than i, and j in the
    trunk or in i's branch; a padding slot attends to itself only (a row of the softmax must not be empty)."""
    width = sequence_ids.shape[1]
    q_seq, k_seq = sequence_ids[:, :, None], sequence_ids[:, None, :]
    q_branch, k_branch = branch_ids[:, :, None], branch_ids[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool, device=sequence_ids.device).tril()
    allowed = (q_seq == k_seq) & (k_seq >= 0) & causal & ((k_branch == q_branch) | (k_branch == 0))
    pad = sequence_ids < 0
    eye = torch.eye(width, dtype=torch.bool, device=sequence_ids.device)
    return allowed | (pad[:, :, None] & eye)
