"""`align.models.layout`: the shared layout of a preference batch, worked out by hand."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from align.models.layout import attention_allowed, build_shared_layout, pack_rows  # noqa: E402
from align.models.layout_forward import select_images  # noqa: E402


def _pair_batch():
    # chosen [10 11 12 | 20 21], rejected [10 11 12 | 30]: a 3-token prompt, completions after it
    input_ids = torch.tensor([[10, 11, 12, 20, 21], [10, 11, 12, 30, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    completion_mask = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]])
    return input_ids, attention_mask, completion_mask


def test_a_pair_becomes_trunk_and_two_branches():
    layout = build_shared_layout(*_pair_batch(), pairs=[(0, 1)], padding_free=False, images_per_row=[1, 1])
    # Common prefix 10 11 12: the trunk keeps 10 11, and each branch starts at 12, the last common token, which
    # predicts 20 in the chosen branch and 30 in the rejected one.
    assert layout.sources.tolist() == [[0, 1, 2, 3, 4, 7, 8]]  # flat n * T + t: chosen 0..4, rejected t=2, 3
    assert layout.branch_ids.tolist() == [[0, 0, 1, 1, 1, 2, 2]]
    assert layout.sequence_ids.tolist() == [[0] * 7]
    assert layout.successors.tolist() == [[1, 2, 3, 4, -1, 8, -1]]  # rows end at t=4 (chosen), t=3 (rejected)
    assert layout.locations.tolist() == [[0, 1, 2, 3, 4], [0, 1, 5, 6, 0]]  # the rejected row reads the trunk
    assert layout.image_rows == [0]  # one image for the pair
    assert layout.tokens() == 7  # against 9 unshared
    allowed = attention_allowed(layout.sequence_ids, layout.branch_ids)[0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0, 1, 0],  # the rejected branch sees the trunk and itself, never the chosen branch
        [1, 1, 0, 0, 0, 1, 1],
    ]


def test_the_trunk_stops_where_the_completion_masks_differ():
    input_ids, attention_mask, completion_mask = _pair_batch()
    completion_mask[1, 2] = 1  # token 12 is a completion token on the rejected side only
    layout = build_shared_layout(input_ids, attention_mask, completion_mask, pairs=[(0, 1)], padding_free=False)
    assert layout.branch_ids.tolist() == [[0, 1, 1, 1, 1, 2, 2, 2]]  # common prefix 2: trunk [10], branches at 11
    assert layout.successors.tolist()[0][0] == 1


def test_padding_free_packs_sequences_first_fit_and_pads_the_rest():
    # rows 0/1 a pair (7 slots), row 2 a single of 3 tokens, row 3 a single of 4 tokens
    input_ids = torch.tensor([[10, 11, 12, 20, 21], [10, 11, 12, 30, 0], [5, 6, 7, 0, 0], [5, 6, 7, 8, 0]])
    attention_mask = (input_ids != 0).long()
    completion_mask = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0]])
    layout = build_shared_layout(input_ids, attention_mask, completion_mask, pairs=[(0, 1)], padding_free=True,
                                 images_per_row=[1, 1, 1, 1])
    # sequences: pair (7), row 2 (3), row 3 (4); packs as wide as 7: [pair], [row 3, row 2]
    assert pack_rows([7, 3, 4]) == [[0], [2, 1]]
    assert layout.sources.tolist() == [[0, 1, 2, 3, 4, 7, 8], [15, 16, 17, 18, 10, 11, 12]]
    assert layout.sequence_ids.tolist() == [[0] * 7, [2, 2, 2, 2, 1, 1, 1]]
    assert layout.image_rows == [0, 3, 2]
    assert layout.locations[2].tolist() == [11, 12, 13, 0, 0] and layout.locations[3].tolist() == [7, 8, 9, 10, 0]
    allowed = attention_allowed(layout.sequence_ids, layout.branch_ids)[1].int()
    assert allowed[4].tolist() == [0, 0, 0, 0, 1, 0, 0]  # row 2's first token sees nothing of row 3
    assert allowed[6].tolist() == [0, 0, 0, 0, 1, 1, 1]
    unpacked = build_shared_layout(input_ids, attention_mask, completion_mask, pairs=[], padding_free=False)
    assert unpacked.sources.shape == (4, 5) and unpacked.tokens() == int(attention_mask.sum())
    assert (unpacked.sources[1, 4] == -1) and attention_allowed(unpacked.sequence_ids, unpacked.branch_ids)[1, 4, 4]


def test_pairs_without_a_common_prefix_stay_two_rows_and_bad_batches_are_refused():
    input_ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    ones = torch.ones_like(input_ids)
    layout = build_shared_layout(input_ids, ones, ones, pairs=[(0, 1)], padding_free=False)
    assert layout.sources.tolist() == [[0, 1, 2], [3, 4, 5]] and layout.branch_ids.eq(0).all()
    with pytest.raises(ValueError, match="not flushed left"):
        build_shared_layout(input_ids, torch.tensor([[0, 1, 1], [1, 1, 1]]), ones, pairs=[], padding_free=False)
    with pytest.raises(ValueError, match="a row is in two pairs"):
        build_shared_layout(input_ids, ones, ones, pairs=[(0, 1), (1, 0)], padding_free=False)


def test_select_images_reorders_whole_images():
    pixels = torch.arange(4).float()[:, None].repeat(1, 3)  # 4 images, one entry each
    out = select_images({"pixel_values": pixels, "image_sizes": torch.tensor([[1, 1], [2, 2], [3, 3], [4, 4]])},
                        image_rows=[2, 0], images_per_row=[1, 1, 2])
    assert out["pixel_values"][:, 0].tolist() == [2, 3, 0] and out["image_sizes"][:, 0].tolist() == [3, 4, 1]
    # Qwen2-VL: pixel_values holds t*h*w patch rows per image (2 rows, then 4, then 1)
    grid = torch.tensor([[1, 1, 2], [1, 2, 2], [1, 1, 1]])
    patches = torch.arange(7).float()[:, None]
    out = select_images({"pixel_values": patches, "image_grid_thw": grid}, image_rows=[1, 0], images_per_row=[2, 1])
    assert out["pixel_values"][:, 0].tolist() == [6, 0, 1, 2, 3, 4, 5]
    assert out["image_grid_thw"].tolist() == [[1, 1, 1], [1, 1, 2], [1, 2, 2]]
