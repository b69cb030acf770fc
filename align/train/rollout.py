"""Rollout tensors: prompt batches + sampled completions -> training sequences, split per row and re-batched.

A rollout row is laid out flush-left and right-padded: [prompt tokens | response tokens | padding], so each
row's positions start at 0 as they did when it was generated (a left-padded prompt would shift them). Per-token
values (log-probs, values, advantages) live on the shifted grid [B, L-1]: column t belongs to the token at t + 1,
the one predicted from position t.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TOKEN_KEYS = ("input_ids", "attention_mask", "action_mask")  # [B, L] per row


def response_mask(completion_ids: torch.Tensor, eos_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, C] sampled ids -> (mask [B, C]: 1 up to and including the first EOS, has_eos [B] bool)."""
    is_eos = torch.isin(completion_ids, torch.tensor(list(eos_ids), device=completion_ids.device))
    has_eos = is_eos.any(dim=1)
    first = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, completion_ids.shape[1],
                                                                              dtype=torch.long))
    positions = torch.arange(completion_ids.shape[1], device=completion_ids.device).expand_as(completion_ids)
    return (positions <= first.unsqueeze(1)).long(), has_eos


def _per_token(key: str, value, rows: int, width: int) -> bool:
    """A per-token field of the batch: [B, T] or [B, T, ...] (IDEFICS' image_attention_mask is [B, T, N_img]).
    Pixels never are, whatever their shape happens to be."""
    return (isinstance(value, torch.Tensor) and not key.startswith("pixel_") and value.dim() >= 2
            and tuple(value.shape[:2]) == (rows, width))


def training_sequences(prompt: dict, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                       pad_id: int) -> dict:
    """Left-padded prompt batch (the processor's outputs) + right-padded responses [B, C] -> one batch of
    flush-left rows: input_ids, attention_mask, action_mask (1 on response tokens) [B, L], the prompt's other
    per-token fields extended over the response (token_type_ids with 0; IDEFICS' image_attention_mask with the last
    prompt token's row, as its generation does), and the prompt's image fields as they were."""
    ids, mask = prompt["input_ids"], prompt["attention_mask"]
    rows, width = ids.shape
    n_new = completion_ids.shape[1]
    batch = {
        "input_ids": torch.cat([ids, completion_ids.masked_fill(completion_mask == 0, pad_id)], dim=1),
        "attention_mask": torch.cat([mask, completion_mask.to(mask.dtype)], dim=1),
        "action_mask": torch.cat([torch.zeros_like(mask), completion_mask.to(mask.dtype)], dim=1),
    }
    for key, value in prompt.items():
        if key in batch:
            continue
        if _per_token(key, value, rows, width):
            if key == "image_attention_mask":
                tail = value[:, -1:].expand(-1, n_new, *value.shape[2:])
            else:
                tail = value.new_zeros((rows, n_new, *value.shape[2:]))
            batch[key] = torch.cat([value, tail], dim=1)
        else:
            batch[key] = value
    shifts = (width - mask.sum(dim=1)).tolist()  # each row's left padding
    total = width + n_new
    for key, value in list(batch.items()):
        if _per_token(key, value, rows, total):
            rolled = torch.stack([torch.roll(value[i], -int(s), dims=0) for i, s in enumerate(shifts)])
            if key == "input_ids":  # padding that rolled round to the end reads as pad
                rolled = rolled.masked_fill(torch.stack([torch.roll(batch["attention_mask"][i], -int(s))
                                                         for i, s in enumerate(shifts)]) == 0, pad_id)
            batch[key] = rolled
    length = int(batch["attention_mask"].sum(dim=1).max())
    return {k: v[:, :length] if _per_token(k, v, rows, total) else v for k, v in batch.items()}


def _is_image_field(key: str) -> bool:
    return key.startswith(("pixel_", "image_"))


def split_rows(batch: dict, n_rows: int, images_per_row: Sequence[int], row_keys: Sequence[str] = (),
               placeholder_id: int | None = None) -> list[dict]:
    """A batch -> one dict per row. Per-token fields ([B, L, ...]) and `row_keys` go by row; image fields
    (pixel_*, image_*) are sliced by each row's images; Qwen-style
    flattened patches (pixel_values [sum patches, D] beside image_grid_thw) by each image's patch count; with
    `placeholder_id` (Fuyu), pixel_values [sum placeholders, D] by each row's placeholder tokens; every other
    tensor must be per row ([B, ...]). Anything else is an error, so no field lands with the wrong row."""
    image_starts = [0]
    for n in images_per_row:
        image_starts.append(image_starts[-1] + n)
    n_images = image_starts[-1]
    patch_starts = None
    if "image_grid_thw" in batch:
        patches = batch["image_grid_thw"].prod(dim=-1).tolist()  # [N_img]
        patch_starts = [0]
        for r in range(n_rows):
            patch_starts.append(patch_starts[-1] + sum(patches[image_starts[r]:image_starts[r + 1]]))
    if placeholder_id is not None:
        counts = (batch["input_ids"] == placeholder_id).sum(dim=1).tolist()  # [B] pixel rows of each row
        patch_starts = [0]
        for count in counts:
            patch_starts.append(patch_starts[-1] + int(count))
    width = batch["input_ids"].shape[1]
    rows: list[dict] = [{} for _ in range(n_rows)]
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"rollout field {key!r} is a {type(value).__name__}, not a tensor")
        if key in row_keys or _per_token(key, value, n_rows, width):
            bounds = list(range(n_rows + 1))  # per-token fields, image_attention_mask included, go by row
        elif key == "pixel_values" and patch_starts is not None:
            bounds = patch_starts
        elif _is_image_field(key) and value.shape[0] == n_images:
            bounds = image_starts
        elif value.shape[0] == n_rows:
            bounds = list(range(n_rows + 1))
        else:
            raise ValueError(f"rollout field {key!r} of shape {tuple(value.shape)} is neither per row ({n_rows}) "
                             f"nor per image ({n_images})")
        for r in range(n_rows):
            rows[r][key] = value[bounds[r]:bounds[r + 1]]
    return rows


def stack_rows(rows: Sequence[dict], pad_id: int, token_keys: Sequence[str]) -> dict:
    """Rows from `split_rows` -> one batch: the `token_keys` tensors ([1, L_i] or [1, L_i - 1]) right-padded to the
    longest row (input_ids with `pad_id`, the rest with 0) and stacked; every other tensor concatenated."""
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if key in token_keys:
            width = max(v.shape[1] for v in values)
            fill = pad_id if key == "input_ids" else 0
            out[key] = torch.cat([torch.nn.functional.pad(v, (0, width - v.shape[1]), value=fill) for v in values])
        else:
            out[key] = torch.cat(values)
    return out


def token_keys(batch: dict, n: int) -> list[str]:
    """The per-token fields ([B, L] or the shifted [B, L-1]) of a batch of `n` rows, which `stack_rows` pads to the
    longest row."""
    return [k for k, v in batch.items() if isinstance(v, torch.Tensor) and v.dim() == 2 and v.shape[0] == n
            and not k.startswith(("pixel_", "image_"))]


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and whatever the model's generation config declares."""
    from align.errors import ConfigError

    declared = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [declared] if isinstance(declared, int) else list(declared or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.insert(0, tokenizer.eos_token_id)
    if not ids:
        raise ConfigError("the tokenizer and generation config declare no EOS token; the trainer cannot tell where a "
                          "response ends")
    return ids


def sampling_config(model, pad_id: int, eos_ids: Sequence[int], max_new_tokens: int, temperature: float,
                    top_p: float = 1.0, top_k: int = 0, **extra):
    """The GenerationConfig of a rollout: sampling as asked, image placeholder tokens never sampled (a family's
    config names them `image_token_id` or `image_token_index`; some have neither)."""
    from transformers import GenerationConfig

    config = model.config
    suppress = [t for t in [getattr(config, "image_token_id", None), getattr(config, "image_token_index", None)]
                if isinstance(t, int)]
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p,
                            top_k=top_k or 0, pad_token_id=pad_id, eos_token_id=list(eos_ids),
                            suppress_tokens=suppress or None, disable_compile=True, **extra)


def rollout_seed(seed: int, global_step: int, rank: int) -> int:
    """The sampling seed of one rank's rollout: it moves with the optimizer step and the rank, so every rank draws
    its own samples and a resumed run draws what the uninterrupted one would have."""
    return seed + 1_000_003 * global_step + rank


def pixel_placeholder_id(model, family: str) -> int | None:
    """The image placeholder token whose count splits a batch's pixel_values by row, for the families whose
    pixels come one row per placeholder (`Family.pixels_per_placeholder`); None for the others."""
    from align.models.families import get_family

    if not get_family(family).pixels_per_placeholder:
        return None
    return int(model.config.image_token_id)
