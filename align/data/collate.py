"""Batches for training on chat records: one processor call per batch, loss on the assistant turns only.

Where the assistant tokens are is found the same way for every family: the conversation is encoded up to each
assistant turn (with the generation prompt) and up to its end, and the longest common token prefix with the full
encoding marks where the turn starts and ends. That works through any family's encoder (IDEFICS interleaving,
BLIP-2 query tokens, Fuyu patches) and any chat template, with or without `{% generation %}` markers. Spans are
computed once per row before training (`assistant_spans`), which is also where over-long rows are caught: image
tokens are never cut silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.data.messages import count_placeholders
from align.models.inputs import split_media


@dataclass
class Example:
    """One conversation with its media, loaded: still images (PIL) and videos (lists of PIL frames)."""

    messages: list[dict]
    images: list[Any] = field(default_factory=list)
    videos: list[list[Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Spans:
    """Token layout of one example, unpadded: total length and [start, end) of each assistant turn."""

    length: int
    assistant: tuple[tuple[int, int], ...]
    last_image_token: int = -1  # position of the last image/video token, -1 without any


def load_record_media(values, base_dir, image_root, path, row, field: str = "images"):
    """A record's image column, decoded -> (still images, videos); errors name the file, row and field."""
    from align.data.images import load_media

    loaded = [load_media(v, base_dir, image_root, path=path, row=row, field=field) for v in values or []]
    return split_media(loaded)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class ConversationEncoder:
    """Encodes batches of `Example`s for one family and finds their assistant tokens."""

    def __init__(self, processor, family: str):
        from align.models.families import get_family

        self.processor = processor
        self.family = family
        self.spec = get_family(family)
        tokenizer = getattr(processor, "tokenizer", processor)
        self.media_token_ids = _media_token_ids(processor, tokenizer)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._layouts: dict[str, Spans] = {}

    def encode(self, examples: Sequence[Example], add_generation_prompt: bool = False):
        from align.models.inputs import encode

        return encode(
            self.processor,
            self.family,
            [e.messages for e in examples],
            [e.images for e in examples],
            add_generation_prompt=add_generation_prompt,
            videos=[e.videos for e in examples] if any(e.videos for e in examples) else None,
        )

    def _ids(self, example: Example, add_generation_prompt: bool) -> list[int]:
        batch = self.encode([example], add_generation_prompt)
        return batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()

    def assistant_spans(self, example: Example) -> Spans:
        """Where each assistant turn's tokens sit in the example's full encoding (its end-of-turn token included).

        Computed once per (conversation, image sizes): a processor's image-token expansion depends on an image's
        size, never its pixels, so rows that repeat a conversation on images of one size (a synthetic world's QA)
        share one encoding. Rows with videos are always encoded."""
        if example.videos or not all(hasattr(image, "size") for image in example.images):
            return self._encode_spans(example)
        key = json.dumps([example.messages, [list(image.size) for image in example.images]], sort_keys=True,
                         default=str)
        if key not in self._layouts:
            self._layouts[key] = self._encode_spans(example)
        return self._layouts[key]

    def _encode_spans(self, example: Example) -> Spans:
        full = self._ids(example, add_generation_prompt=False)
        spans = []
        for k, message in enumerate(example.messages):
            if message.get("role") != "assistant":
                continue
            before = _truncated(example, k)
            start = _common_prefix(self._ids(before, add_generation_prompt=True), full)
            end = len(full) if k == len(example.messages) - 1 else _common_prefix(
                self._ids(_truncated(example, k + 1), add_generation_prompt=False), full)
            if end > start:
                spans.append((start, end))
        media_positions = [i for i, t in enumerate(full) if t in self.media_token_ids]
        return Spans(len(full), tuple(spans), media_positions[-1] if media_positions else -1)


def _truncated(example: Example, n_messages: int) -> Example:
    """The first `n_messages` turns, with only the media their placeholders use."""
    messages = example.messages[:n_messages]
    n_images, n_videos = count_placeholders(messages)
    return Example(messages, example.images[:n_images], example.videos[:n_videos])


def _media_token_ids(processor, tokenizer) -> set[int]:
    """Ids of the tokens that stand for image/video features (to tell whether truncation would cut them)."""
    ids: set[int] = set()
    for attr in ("image_token", "video_token", "image_pad_token", "video_pad_token", "boi_token", "eoi_token"):
        token = getattr(processor, attr, None) or getattr(tokenizer, attr, None)
        token = getattr(token, "content", token)  # BLIP-2 keeps an AddedToken
        if isinstance(token, str):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
                ids.add(token_id)
    for attr in ("image_token_id", "video_token_id"):
        token_id = getattr(processor, attr, None)
        if isinstance(token_id, int):
            ids.add(token_id)
    return ids


def labels_from_spans(batch, spans: Sequence[Spans]):
    """[B, T] labels: input ids on assistant tokens, -100 elsewhere; rows are left-padded (padding first)."""
    import torch

    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = torch.full_like(input_ids, -100)
    width = input_ids.shape[1]
    for i, layout in enumerate(spans):
        length = int(mask[i].sum())
        offset = width - length  # left padding
        if length != layout.length or not bool(mask[i, offset:].all()):
            raise RuntimeError(
                f"row {i} of the batch encodes to {length} tokens but to {layout.length} alone (or its padding is "
                "not one block on the left); the family encoder must be batch-invariant"
            )
        for start, end in layout.assistant:
            labels[i, offset + start: offset + end] = input_ids[i, offset + start: offset + end]
    return labels


def flatten_rows(batch: dict, images_per_row: Sequence[int], pad_token_id: int = 0) -> dict:
    """A left-padded batch ([B, T] tensors) as packs of its real tokens ([P, W], P <= B): rows placed first-fit,
    longest first, into packs as wide as the longest row, position ids restarting at every row (and at a pack's
    padded tail) and no attention mask, so transformers' packed-sequence masks keep the rows apart and little
    compute goes to padding. One pack of the whole batch would make attention quadratic in the batch's tokens;
    packs as wide as the longest row keep it at the padded batch's width. Other per-token tensors are packed
    alike, and the image tensors (`images_per_row` images per row) are reordered with the rows
    (`align.models.layout_forward.select_images`), so image features still fill the image tokens in order."""
    import torch

    from align.models.layout import pack_rows
    from align.models.layout_forward import select_images

    mask = batch["attention_mask"].bool()  # [B, T], left padding
    lengths = mask.sum(dim=1).tolist()
    width = max(lengths)
    packs = pack_rows(lengths)
    order = [r for p in packs for r in p]
    fill = {"input_ids": pad_token_id, "labels": -100}
    out = select_images(batch, order, list(images_per_row))
    for key, value in batch.items():
        if key == "attention_mask" or key in out:
            continue
        if not (isinstance(value, torch.Tensor) and value.shape[:2] == mask.shape):
            out[key] = value
            continue
        packed = torch.full((len(packs), width, *value.shape[2:]), fill.get(key, 0), dtype=value.dtype)
        for k, rows in enumerate(packs):
            tokens = torch.cat([value[r][mask[r]] for r in rows])
            packed[k, :len(tokens)] = tokens
        out[key] = packed
    positions = torch.zeros(len(packs), width, dtype=torch.long)
    for k, rows in enumerate(packs):
        parts = [torch.arange(lengths[r]) for r in rows]
        used = sum(lengths[r] for r in rows)
        parts.append(torch.arange(width - used))  # the padded tail: a segment of its own, unlabelled
        positions[k] = torch.cat(parts)
    out["position_ids"] = positions
    # transformers finds the rows from the positions only without a KV cache (a model in eval mode makes one)
    out["use_cache"] = False
    return out


class ConversationCollator:
    """`Trainer` collator: features carry a `row` index; rows are loaded, encoded as one batch and labelled; with
    `flat`, the batch becomes one padding-free row (`flatten_rows`)."""

    def __init__(self, encoder: ConversationEncoder, load_example: Callable[[int], Example], spans: Sequence[Spans],
                 flat: bool = False):
        self.encoder = encoder
        self.load_example = load_example
        self.spans = spans
        self.flat = flat

    def __call__(self, features: list[dict]) -> dict:
        rows = [int(f["row"]) for f in features]
        examples = [self.load_example(r) for r in rows]
        batch = self.encoder.encode(examples, add_generation_prompt=False)
        batch["labels"] = labels_from_spans(batch, [self.spans[r] for r in rows])
        if not self.flat:
            return dict(batch)
        return flatten_rows(dict(batch), [len(e.images) for e in examples], self.encoder.pad_token_id)


@dataclass
class CheckedRecords:
    """Records read and checked before training: each row's (file, row number) for errors, the base folder and
    image root its images resolve under, and how many rows were dropped (too long)."""

    records: list[dict]
    base_dir: Path | None
    image_root: Path | None
    origins: list[tuple[Any, int]]
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.records)
