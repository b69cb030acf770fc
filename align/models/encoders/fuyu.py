"""Fuyu: one image per example; the token stream is the chat template's text, nothing appended.

The processor builds `image tokens <s> text <0x04>` per example: it appends `<0x04>` (Fuyu's "beginning of
answer") to every text, expecting a bare prompt. Rendered by a chat template the text is a whole conversation or a
prompt that already ends in the template's generation prompt, so the extra token would follow `</s>` in training
rows and sit where the template never puts one in generation prompts. The processor pads on the left (always),
so that token is each row's last column, and it is removed.
"""

from __future__ import annotations

from typing import Any

from align.errors import ModelError
from align.models.encoders import one_image_each
from align.models.inputs import render_chat

BEGINNING_OF_ANSWER = "<0x04>"


def encode_fuyu(
    processor,
    conversations: list[list[dict]],
    images: list[list[Any]],
    add_generation_prompt: bool = True,
    videos: list[list[Any]] | None = None,
) -> Any:
    """input_ids/attention_mask [B, T] left-padded, pixel_values [total patches in the batch, 3*ph*pw]."""
    pixels = one_image_each(images, "fuyu", videos)
    texts = [render_chat(processor, conv, add_generation_prompt) for conv in conversations]
    # return_legacy_image_output=False: `pixel_values` (what the model's forward takes), not `image_patches`.
    batch = processor(text=texts, images=pixels, return_legacy_image_output=False, return_tensors="pt")
    boa = processor.tokenizer.convert_tokens_to_ids(BEGINNING_OF_ANSWER)
    if not bool((batch["input_ids"][:, -1] == boa).all()):
        raise ModelError(f"the Fuyu processor no longer ends every row with {BEGINNING_OF_ANSWER}; "
                         "align.models.encoders.fuyu needs updating for this transformers version")
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in batch:
            batch[key] = batch[key][:, :-1]
    return batch
