"""Preference data for `align dpo`: read, check, measure every pair; the collator that builds TRL's DPO batches.

Each pair is encoded as two whole conversations, [prompt + chosen] and [prompt + rejected], through the family's
own encoder (`ConversationEncoder`), and the completion is the assistant span found the way SFT finds it. That
works for every family (TRL's `DataCollatorForVisionPreference` tokenizes prompt and completion apart, which
breaks families whose processor must see the whole conversation). Everything that can be wrong with a row is
found before training: the data contract, missing spans or scores for a variant that needs them, over-long pairs.

mdpo adds a third row group, the chosen response under the corrupted image m': the row's `corrupted_images`
(loaded like `images`) or a random resized crop keeping 1-20% of the area (mDPO's m'), seeded by
`corruption_seed(seed, row)`, so the policy and the reference score the same m' (both read the one batch) and a
rerun with the same seed builds the same m'. (mDPO's code draws a fresh crop on every forward pass, so its policy
and reference see different crops; here each row keeps its crop for the whole run.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.data.collate import (
    ConversationEncoder,
    Example,
    Spans,
    labels_from_spans,
    load_record_media,
    split_media,
)
from align.errors import DataError


@dataclass(frozen=True)
class PairLayout:
    """Token layout of one pair: each side's Spans and, for span-weighted variants, the weighted token positions
    (absolute, in the side's unpadded encoding)."""

    chosen: Spans
    rejected: Spans
    chosen_weighted: tuple[int, ...] = ()
    rejected_weighted: tuple[int, ...] = ()
    corrupted: Spans | None = None  # mdpo: chosen under the row's own corrupted_images (None: same as `chosen`)


@dataclass
class PreferenceData:
    records: list[dict]
    layouts: list[PairLayout]
    base_dir: Path | None
    image_root: Path | None
    origins: list[tuple[Any, int]]
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.records)

    def load_pair(self, index: int) -> tuple[Example, Example]:
        path, row = self.origins[index]
        return _pair(self.records[index], self.base_dir, self.image_root, path, row)

    def load_corrupted_chosen(self, index: int, seed: int) -> Example:
        """mdpo: [prompt + chosen] under the corrupted image m' (the row's corrupted_images, else a crop seeded by
        `corruption_seed(seed, index)`)."""
        path, row = self.origins[index]
        return _corrupted_chosen(self.records[index], self.base_dir, self.image_root, path, row,
                                 corruption_seed(seed, index))


MDPO_CROP_SCALE = (0.01, 0.2)  # mDPO's RandomResizedCrop(scale=(0.01, 0.2)): 1-20% of the area


def corruption_seed(seed: int, row: int) -> int:
    """Row `row`'s own 63-bit seed for its m' under the run's `seed`, stable across runs and platforms."""
    import hashlib

    digest = hashlib.sha256(f"mdpo-corruption\x1f{int(seed)}\x1f{int(row)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _corrupted_chosen(record: dict, base_dir, image_root, path, row, seed: int) -> Example:
    from align.data.images import load_media

    prompt = list(record["prompt"])
    if record.get("corrupted_images") is not None:
        images, videos = load_record_media(record["corrupted_images"], base_dir, image_root, path, row,
                                           field="corrupted_images")
        return Example(prompt + list(record["chosen"]), images, videos)
    from data_builders.corrupt.image import apply_corruption

    loaded = [load_media(v, base_dir, image_root, path=path, row=row, field="images") for v in record["images"]]
    # Every still image and every video (all its frames alike: the same crop box) gets its own seed from `seed`.
    flat, seeds, sizes = [], [], []
    for i, item in enumerate(loaded):
        frames = item if isinstance(item, list) else [item]
        flat += frames
        seeds += [corruption_seed(seed, i)] * len(frames)
        sizes.append(len(frames) if isinstance(item, list) else None)
    cropped, _ = apply_corruption("random_resized_crop", flat, seed=seeds, scale=MDPO_CROP_SCALE)
    media, k = [], 0
    for n in sizes:
        media.append(cropped[k] if n is None else cropped[k:k + n])
        k += 1 if n is None else n
    images, videos = split_media(media)
    return Example(prompt + list(record["chosen"]), images, videos)


def _pair(record: dict, base_dir, image_root, path, row) -> tuple[Example, Example]:
    images, videos = load_record_media(record.get("images"), base_dir, image_root, path, row)
    prompt = list(record["prompt"])
    return (Example(prompt + list(record["chosen"]), images, videos),
            Example(prompt + list(record["rejected"]), images, videos))


def char_spans_to_tokens(tokenizer, token_ids: Sequence[int], text: str, spans: Sequence[Sequence[int]]) -> list[int]:
    """Indices k of `token_ids` whose characters overlap any [start, end) span of `text`.

    `token_ids` are the assistant turn's tokens in context (they may add template tokens around `text`, e.g. an
    end-of-turn token). The decoded prefix of k tokens gives token k's character range; the completion text is
    located in the decoded turn, so template text around it shifts nothing. Decoding, not offsets of a separate
    tokenization, keeps the mapping true to the tokens the model actually scores.
    """
    decoded = tokenizer.decode(list(token_ids), skip_special_tokens=False)
    base = decoded.find(text)
    if base < 0:
        raise ValueError(f"the completion text {text[:40]!r} is not found in its decoded tokens {decoded[:80]!r}")
    ends = [len(tokenizer.decode(list(token_ids[: k + 1]), skip_special_tokens=False)) for k in range(len(token_ids))]
    marked = []
    start_k = 0
    for k, end_k in enumerate(ends):
        lo, hi = start_k - base, end_k - base  # token k covers characters [lo, hi) of `text`
        if hi > lo and any(lo < e and s < hi for s, e in spans):
            marked.append(k)
        start_k = end_k
    return marked


def load_preference_data(
    path: str | Path,
    processor,
    family: str,
    image_root: str | Path | None = None,
    max_length: int | None = None,
    too_long: str = "error",
    needs_spans: bool = False,
    score_fields: Sequence[str] = (),
    needs_images: bool = False,
) -> PreferenceData:
    """Read and check every pair; compute both sides' completion spans (and weighted tokens) up front.

    `score_fields` (e.g. hsa's rejected_score) must be present on every row; the schema has checked their type.
    `needs_images` (mdpo): every row must carry an image; a row's `corrupted_images` get their own layout."""
    from align.data.io import read_records
    from align.data.messages import completion_text
    from align.data.schema import validate_records

    records = read_records(path, image_root=image_root)
    if not records:
        raise DataError(path, "has no rows")
    validate_records(records, "preference", path, records.base_dir, image_root, False, records.origins)
    encoder = ConversationEncoder(processor, family)
    tokenizer = getattr(processor, "tokenizer", processor)
    kept, layouts, origins, dropped = [], [], [], 0
    for record, (origin, row) in zip(records, records.origins, strict=True):
        if needs_spans:
            for side in ("chosen_spans", "rejected_spans"):
                if not record.get(side):
                    raise DataError(origin, "this variant weights the changed segments, but the row has none; "
                                    "build pairs with spans (e.g. align build-pairs halva) or pick variant dpo",
                                    row=row, field=side)
        for name in score_fields:
            if record.get(name) is None:
                raise DataError(origin, f"this variant weights each pair by its {name}, but the row has none; "
                                "add the score to every row or pick variant dpo", row=row, field=name)
        if needs_images and not record.get("images"):
            raise DataError(origin, "this variant scores the chosen response under a corrupted copy of the row's "
                            "image, but the row has no image; add images or pick variant dpo",
                            row=row, field="images")
        examples = list(_pair(record, records.base_dir, image_root, origin, row))
        if needs_images and record.get("corrupted_images") is not None:
            examples.append(_corrupted_chosen(record, records.base_dir, image_root, origin, row, 0))
        sides = []
        for example in examples:
            layout = encoder.assistant_spans(example)
            if not layout.assistant:
                raise DataError(origin, "no completion tokens (empty assistant turn?)", row=row, field="chosen")
            sides.append(layout)
        if max_length is not None and max(s.length for s in sides) > max_length:
            if too_long == "error":
                raise DataError(origin, f"{max(s.length for s in sides)} tokens exceed max_length {max_length}; "
                                "raise max_length or set too_long=drop", row=row, field="chosen")
            dropped += 1
            continue
        weighted: list[tuple[int, ...]] = [(), ()]
        if needs_spans:
            pair = _pair(record, records.base_dir, image_root, origin, row)
            for i, (side, example, layout) in enumerate(zip(("chosen", "rejected"), pair, sides, strict=True)):
                batch = encoder.encode([example])
                ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
                start, end = layout.assistant[-1]
                try:
                    ks = char_spans_to_tokens(tokenizer, ids[start:end], completion_text(record[side]),
                                              record[f"{side}_spans"])
                except ValueError as exc:
                    raise DataError(origin, str(exc), row=row, field=f"{side}_spans") from None
                weighted[i] = tuple(start + k for k in ks)
        kept.append(record)
        layouts.append(PairLayout(sides[0], sides[1], weighted[0], weighted[1],
                                  sides[2] if len(sides) > 2 else None))
        origins.append((origin, row))
    if not kept:
        raise DataError(path, f"every pair is longer than max_length {max_length}; raise max_length")
    return PreferenceData(kept, layouts, records.base_dir, Path(image_root) if image_root else None, origins,
                          dropped)


def _flush_left(batch: dict, width_key: str = "input_ids") -> dict:
    """Left padding -> right padding on every per-token [N, T] tensor (TRL's `flush_left` layout), so each row's
    tokens start at position 0 and their positions do not depend on the batch's padding."""
    import torch

    ids = batch[width_key]
    mask = batch["attention_mask"]
    shifts = (mask.shape[1] - mask.sum(dim=1)).tolist()  # [N] left padding of each row
    for key, value in list(batch.items()):
        if (isinstance(value, torch.Tensor) and value.shape == ids.shape
                and not key.startswith(("pixel", "image", "video"))):
            batch[key] = torch.stack([torch.roll(value[i], -int(s)) for i, s in enumerate(shifts)])
    return batch


class PreferenceCollator:
    """`Trainer` collator: rows (a `row` index each) -> TRL's DPO batch of 2B rows, chosen rows first; with
    `corruption_seed` (mdpo) 3B rows: chosen, rejected, then chosen under the corrupted image m'.

    Keys: whatever the family's encoder gives (input_ids, attention_mask, pixel_values, ...; all model inputs),
    `completion_mask` [2B, T] (1 on the assistant turn's tokens), and for span-weighted variants `token_weights`
    [2B, T] (gamma on the tokens of the changed segments, 1 elsewhere), and for score-weighted variants each field
    of `scores` (e.g. `rejected_score`) as a float32 [B] tensor, one value per pair.
    """

    def __init__(self, encoder: ConversationEncoder, data: PreferenceData, gamma: float | None = None,
                 scores: Sequence[str] = (), corruption_seed: int | None = None):
        self.encoder, self.data, self.gamma, self.scores = encoder, data, gamma, tuple(scores)
        self.corruption_seed = corruption_seed

    def __call__(self, features: list[dict]) -> dict:
        import torch

        rows = [int(f["row"]) for f in features]
        pairs = [self.data.load_pair(r) for r in rows]
        layouts = [self.data.layouts[r] for r in rows]
        examples = [p[0] for p in pairs] + [p[1] for p in pairs]  # [2B]: chosen rows first, rejected rows second
        spans = [la.chosen for la in layouts] + [la.rejected for la in layouts]
        if self.corruption_seed is not None:  # [3B]: + chosen under m', the same for policy and reference
            examples += [self.data.load_corrupted_chosen(r, self.corruption_seed) for r in rows]
            spans += [la.chosen if la.corrupted is None else la.corrupted for la in layouts]
        batch = dict(self.encoder.encode(examples, add_generation_prompt=False))
        labels = labels_from_spans(batch, spans)  # checks the left padding and the batch invariance
        batch["completion_mask"] = (labels != -100).long()  # [2B, T] (mdpo: [3B, T])
        if self.gamma is not None:
            weights = torch.ones(labels.shape, dtype=torch.float32)  # [2B, T]
            width = labels.shape[1]
            marked = [la.chosen_weighted for la in layouts] + [la.rejected_weighted for la in layouts]
            if self.corruption_seed is not None:
                marked += [la.chosen_weighted for la in layouts]
            for i, (layout, positions) in enumerate(zip(spans, marked, strict=True)):
                offset = width - layout.length
                for p in positions:
                    weights[i, offset + p] = self.gamma
            batch["token_weights"] = weights
        batch = _flush_left(batch)
        for name in self.scores:  # [B], added after the flush (it only moves [2B, T] tensors)
            batch[name] = torch.tensor([float(self.data.records[r][name]) for r in rows], dtype=torch.float32)
        return batch
