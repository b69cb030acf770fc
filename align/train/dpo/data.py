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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.data.collate import (
    CheckedRecords,
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
    """Token layout of one pair: each side's Spans and, for span variants, the token positions of each span
    (absolute, in the side's unpadded encoding; halva pairs the k-th chosen span with the k-th rejected one, ddpo
    weights their union)."""

    chosen: Spans
    rejected: Spans
    corrupted: Spans | None = None  # mdpo: chosen under the row's own corrupted_images (None: same as `chosen`)
    chosen_phrases: tuple[tuple[int, ...], ...] = ()
    rejected_phrases: tuple[tuple[int, ...], ...] = ()

    @property
    def chosen_weighted(self) -> tuple[int, ...]:
        return _union(self.chosen_phrases)

    @property
    def rejected_weighted(self) -> tuple[int, ...]:
        return _union(self.rejected_phrases)


def _union(groups: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    return tuple(sorted({p for group in groups for p in group}))


@dataclass
class PreferenceData(CheckedRecords):
    layouts: list[PairLayout] = field(kw_only=True)  # one per record

    def load_pair(self, index: int) -> tuple[Example, Example]:
        path, row = self.origins[index]
        return _pair(self.records[index], self.base_dir, self.image_root, path, row)

    def load_corrupted_chosen(self, index: int, seed: int, corruption: Corruption | None = None) -> Example:
        """[prompt + chosen] under a corrupted image: the row's corrupted_images (mdpo), else `corruption`
        (default mDPO's crop) seeded by `corruption_seed(seed, index)`."""
        path, row = self.origins[index]
        return _corrupted_chosen(self.records[index], self.base_dir, self.image_root, path, row,
                                 corruption_seed(seed, index), corruption or MDPO_CROP)


@dataclass(frozen=True)
class Corruption:
    """An `apply_corruption` call: the corruption's name and parameters; whether a row's own corrupted_images
    replace it."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    row_images: bool = True  # use the row's corrupted_images when it has them


MDPO_CROP_SCALE = (0.01, 0.2)  # mDPO's RandomResizedCrop(scale=(0.01, 0.2)): 1-20% of the area
MDPO_CROP = Corruption("random_resized_crop", (("scale", MDPO_CROP_SCALE),))


def povid_noise(t: int = 500) -> Corruption:
    """POVID stage 2's noisy image: forward diffusion of the [0, 1] image at step t (POVID: 500 of 1000)."""
    return Corruption("diffusion_noise", (("t", int(t)), ("space", "unit")), row_images=False)


def corruption_seed(seed: int, row: int) -> int:
    """Row `row`'s own 63-bit seed for its m' under the run's `seed`, stable across runs and platforms."""
    from align.seeds import derive_seed

    return derive_seed("mdpo-corruption", int(seed), int(row))


def _corrupted_chosen(record: dict, base_dir, image_root, path, row, seed: int,
                      corruption: Corruption = MDPO_CROP) -> Example:
    from align.data.images import load_media

    prompt = list(record["prompt"])
    if corruption.row_images and record.get("corrupted_images") is not None:
        images, videos = load_record_media(record["corrupted_images"], base_dir, image_root, path, row,
                                           field="corrupted_images")
        return Example(prompt + list(record["chosen"]), images, videos)
    from align.data.image_corruptions import apply_corruption

    loaded = [load_media(v, base_dir, image_root, path=path, row=row, field="images") for v in record["images"]]
    # Every still image and every video (all its frames alike: the same crop box) gets its own seed from `seed`.
    flat, seeds, sizes = [], [], []
    for i, item in enumerate(loaded):
        frames = item if isinstance(item, list) else [item]
        flat += frames
        seeds += [corruption_seed(seed, i)] * len(frames)
        sizes.append(len(frames) if isinstance(item, list) else None)
    cropped, _ = apply_corruption(corruption.name, flat, seed=seeds, **dict(corruption.params))
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


def char_spans_to_token_groups(tokenizer, token_ids: Sequence[int], text: str,
                               spans: Sequence[Sequence[int]]) -> list[list[int]]:
    """For each [start, end) span of `text`, the indices k of `token_ids` whose characters overlap it.

    `token_ids` are the assistant turn's tokens in context (they may add template tokens around `text`, e.g. an
    end-of-turn token). Token k's character range comes from the decoded prefixes of k and k + 1 tokens, and the
    completion text is located in the decoded turn, so template text around it shifts nothing. Decoding, not
    offsets of a separate tokenization, keeps the mapping true to the tokens the model actually scores. The
    prefixes are decoded in one pass over growing prefixes, O(n) decodes of the turn.
    """
    decoded = tokenizer.decode(list(token_ids), skip_special_tokens=False)
    base = decoded.find(text)
    if base < 0:
        raise ValueError(f"the completion text {text[:40]!r} is not found in its decoded tokens {decoded[:80]!r}")
    ends = [len(tokenizer.decode(list(token_ids[: k + 1]), skip_special_tokens=False)) for k in range(len(token_ids))]
    groups: list[list[int]] = [[] for _ in spans]
    start_k = 0
    for k, end_k in enumerate(ends):
        lo, hi = start_k - base, end_k - base  # token k covers characters [lo, hi) of `text`
        if hi > lo:
            for g, (s, e) in enumerate(spans):
                if lo < e and s < hi:
                    groups[g].append(k)
        start_k = end_k
    return groups


def char_spans_to_tokens(tokenizer, token_ids: Sequence[int], text: str, spans: Sequence[Sequence[int]]) -> list[int]:
    """Indices k of `token_ids` whose characters overlap any [start, end) span of `text` (see
    `char_spans_to_token_groups`), in increasing order."""
    return sorted({k for group in char_spans_to_token_groups(tokenizer, token_ids, text, spans) for k in group})


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
    phrase_pairs: bool = False,
    corrupted_images: bool = False,
) -> PreferenceData:
    """Read and check every pair; compute both sides' completion spans (and weighted tokens) up front.

    `score_fields` (e.g. hsa's rejected_score) must be present on every row; the schema has checked their type.
    `needs_images` (mdpo, povid): every row must carry an image. `corrupted_images` (mdpo): a row's own
    corrupted_images are scored, so they get their own layout.
    `phrase_pairs` (halva): the k-th chosen span pairs with the k-th rejected span, so both sides must mark as
    many spans, and every span must cover at least one completion token."""
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
                # [] says "no changed segment" (a correction that only inserted or deleted: no token weighs more);
                # a missing column says nothing, and phrase pairs need at least one phrase
                if record.get(side) is None or (phrase_pairs and not record[side]):
                    raise DataError(origin, "this variant weights the changed segments, but the row has none; "
                                    "build pairs with spans (e.g. align build-pairs halva) or pick variant dpo",
                                    row=row, field=side)
            if phrase_pairs and len(record["chosen_spans"]) != len(record["rejected_spans"]):
                raise DataError(origin, f"{len(record['chosen_spans'])} chosen spans but "
                                f"{len(record['rejected_spans'])} rejected spans; the k-th chosen phrase pairs with "
                                "the k-th rejected one, so both sides need as many", row=row, field="rejected_spans")
        for name in score_fields:
            if record.get(name) is None:
                raise DataError(origin, f"this variant weights each pair by its {name}, but the row has none; "
                                "add the score to every row or pick variant dpo", row=row, field=name)
        if needs_images and not record.get("images"):
            raise DataError(origin, "this variant scores the chosen response under a corrupted copy of the row's "
                            "image, but the row has no image; add images or pick variant dpo",
                            row=row, field="images")
        examples = list(_pair(record, records.base_dir, image_root, origin, row))
        if corrupted_images and record.get("corrupted_images") is not None:
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
        phrases: list[tuple[tuple[int, ...], ...]] = [(), ()]
        if needs_spans:
            pair = _pair(record, records.base_dir, image_root, origin, row)
            for i, (side, example, layout) in enumerate(zip(("chosen", "rejected"), pair, sides, strict=True)):
                batch = encoder.encode([example])
                ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
                start, end = layout.assistant[-1]
                try:
                    groups = char_spans_to_token_groups(tokenizer, ids[start:end], completion_text(record[side]),
                                                        record[f"{side}_spans"])
                except ValueError as exc:
                    raise DataError(origin, str(exc), row=row, field=f"{side}_spans") from None
                if phrase_pairs and not all(groups):
                    k = next(g for g, group in enumerate(groups) if not group)
                    raise DataError(origin, f"span {k} {record[f'{side}_spans'][k]} covers no completion token",
                                    row=row, field=f"{side}_spans")
                phrases[i] = tuple(tuple(start + k for k in group) for group in groups)
        kept.append(record)
        layouts.append(PairLayout(sides[0], sides[1], sides[2] if len(sides) > 2 else None, phrases[0], phrases[1]))
        origins.append((origin, row))
    if not kept:
        raise DataError(path, f"every pair is longer than max_length {max_length}; raise max_length")
    return PreferenceData(kept, records.base_dir, Path(image_root) if image_root else None, origins, dropped,
                          layouts=layouts)


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


@dataclass(frozen=True)
class Layouts:
    """The shared layouts a run's batches use (`align.train.dpo.layouts.resolve_layouts` decides them):
    `prefix_sharing` lays each pair out as one sequence behind its shared prefix (`pairs`: the row groups that
    share prompt and images, chosen group first), `padding_free` packs the sequences into rows without padding,
    `share_vision` encodes each image once per step for every model call (`align.models.layout`)."""

    prefix_sharing: bool = False
    padding_free: bool = False
    share_vision: bool = False
    pairs: tuple[int, int] | None = (0, 1)

    @property
    def any(self) -> bool:
        return self.prefix_sharing or self.padding_free or self.share_vision

    def build(self, batch: dict, images_per_row: list[int], pairs_in_batch: int, videos: bool = False):
        """The `SharedLayout` of a flushed-left `batch` of row groups of `pairs_in_batch` rows each."""
        from align.models.layout import SharedLayout, build_shared_layout

        if not (self.prefix_sharing or self.padding_free) or videos:  # video frames are not reordered (yet)
            return SharedLayout(images_per_row=images_per_row, share_vision=self.share_vision)
        pairs = []
        if self.prefix_sharing and self.pairs is not None:
            first, second = self.pairs
            pairs = [(first * pairs_in_batch + i, second * pairs_in_batch + i) for i in range(pairs_in_batch)]
        layout = build_shared_layout(batch["input_ids"], batch["attention_mask"], batch["completion_mask"], pairs,
                                     self.padding_free, images_per_row)
        layout.share_vision = self.share_vision
        return layout


# What the collator adds beside the model inputs; cached reference values are the features named `ref_*`, per-row
# scores the ones named `*_score` (float32 [B] each).
BATCH_EXTRAS = frozenset({"completion_mask", "token_weights", "phrase_ids", "noisy_inputs", "kl_inputs"})


def is_reference_column(name: str) -> bool:
    return name.startswith("ref_")


def model_inputs(batch: dict) -> dict:
    """The keys of a preference batch the model takes (all but `BATCH_EXTRAS`, reference values and scores)."""
    return {k: v for k, v in batch.items()
            if k not in BATCH_EXTRAS and not is_reference_column(k) and not k.endswith("_score")}


class PreferenceCollator:
    """`Trainer` collator: rows (a `row` index each) -> TRL's DPO batch of 2B rows, chosen rows first; with
    `corruption_seed` (mdpo) 3B rows: chosen, rejected, then chosen under the corrupted image m'.

    Keys: whatever the family's encoder gives (input_ids, attention_mask, pixel_values, ...; all model inputs),
    `completion_mask` [2B, T] (1 on the assistant turn's tokens), and
    - `gamma`: `token_weights` [2B, T], gamma on the tokens of the rows' spans (changed segments), 1 elsewhere;
    - `phrase_ids`: `phrase_ids` [2B, T], k on the tokens of the k-th span (1-based), 0 elsewhere;
    - `scores`: each named row field (e.g. `rejected_score`) as a float32 [B] tensor;
    - `noise`: `noisy_inputs`, the B chosen rows under the noised image, a batch of their own (model inputs
      plus `completion_mask`), token for token the chosen rows' layout;
    - `kl`: `kl_inputs`, B SFT samples (row r takes sample r mod N) with their `completion_mask`;
    - cached reference values (the features named `ref_*`) as float32 [B] tensors;
    - `layouts` (any switch on): `layout`, the batch's `SharedLayout`, which the model call runs in
      (`align.models.layout_forward`); everything else stays in the unshared layout.
    Every per-token tensor is right-aligned to TRL's flush-left layout: each row's tokens start at position 0.
    """

    def __init__(self, encoder: ConversationEncoder, data: PreferenceData, gamma: float | None = None,
                 scores: Sequence[str] = (), corruption_seed: int | None = None, phrase_ids: bool = False,
                 noise: Corruption | None = None, noise_seed: int = 0, kl=None, layouts: Layouts | None = None):
        self.encoder, self.data, self.gamma, self.scores = encoder, data, gamma, tuple(scores)
        self.corruption_seed = corruption_seed
        self.phrase_ids, self.noise, self.noise_seed, self.kl = phrase_ids, noise, noise_seed, kl
        self.layouts = layouts or Layouts()

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
        width = labels.shape[1]
        if self.gamma is not None:
            weights = torch.ones(labels.shape, dtype=torch.float32)  # [2B, T]
            marked = [la.chosen_weighted for la in layouts] + [la.rejected_weighted for la in layouts]
            if self.corruption_seed is not None:
                marked += [la.chosen_weighted for la in layouts]
            for i, (layout, positions) in enumerate(zip(spans, marked, strict=True)):
                offset = width - layout.length
                for p in positions:
                    weights[i, offset + p] = self.gamma
            batch["token_weights"] = weights
        if self.phrase_ids:
            ids = torch.zeros(labels.shape, dtype=torch.long)  # [2B, T]
            phrases = [la.chosen_phrases for la in layouts] + [la.rejected_phrases for la in layouts]
            for i, (layout, groups) in enumerate(zip(spans, phrases, strict=True)):
                offset = width - layout.length
                for k, positions in enumerate(groups, start=1):
                    for p in positions:
                        ids[i, offset + p] = k
            batch["phrase_ids"] = ids
        batch = _flush_left(batch)
        if self.layouts.any:
            batch["layout"] = self.layouts.build(batch, [len(e.images) for e in examples], len(rows),
                                                 videos=any(e.videos for e in examples))
        for name in self.scores:  # [B], added after the flush (it only moves [2B, T] tensors)
            batch[name] = torch.tensor([float(self.data.records[r][name]) for r in rows], dtype=torch.float32)
        for name in features[0]:
            if is_reference_column(name):
                batch[name] = torch.tensor([float(f[name]) for f in features], dtype=torch.float32)  # [B]
        if self.noise is not None:
            noisy = [self.data.load_corrupted_chosen(r, self.noise_seed, self.noise) for r in rows]
            batch["noisy_inputs"] = self._sub_batch(noisy, [la.chosen for la in layouts])
        if self.kl is not None:
            samples = [r % len(self.kl) for r in rows]
            batch["kl_inputs"] = self._sub_batch([self.kl.load_example(j) for j in samples],
                                                 [self.kl.spans[j] for j in samples])
        return batch

    def _sub_batch(self, examples: list[Example], spans: list[Spans]) -> dict:
        """A batch of its own (model inputs + `completion_mask` [N, T]), flushed left like the main one; with
        `share_vision`, its images are encoded once for the policy's and the reference's calls on it (povid's
        noised image, halva's KL samples)."""
        from align.models.layout import SharedLayout

        sub = dict(self.encoder.encode(examples, add_generation_prompt=False))
        sub["completion_mask"] = (labels_from_spans(sub, spans) != -100).long()
        if self.layouts.share_vision:
            sub["layout"] = SharedLayout(images_per_row=[len(e.images) for e in examples], share_vision=True)
        return _flush_left(sub)
