"""BLIP-2: one image per example; its query tokens lead the text, and padding stays in one block on the left.

The processor tokenizes (and pads) the chat text, then puts num_query_tokens `<image>` tokens in front of every
row, so a left-padded row reads `<image>*N <pad>... </s>USER: ...`: a hole in the attention mask between the image
and the text. Models cope (OPT positions follow the mask), but code that takes the first attended position as the
start of the prompt, or shifts rows by their padding (TRL's flush_left), does not. Rows are reordered to
`<pad>... <image>*N </s>USER: ...`; right-padded rows are already in one block.
"""

from __future__ import annotations

from typing import Any

from align.models.encoders import one_image_each
from align.models.inputs import render_chat


def pads_first(batch, keys: tuple[str, ...] = ("input_ids", "attention_mask")):
    """Move each row's padding ([B, T] attention_mask == 0) to the front, keeping the order of everything else."""
    import torch

    # [B, T] stable sort of the mask: padding (0) first, then the tokens in their order; a row without padding
    # keeps its order.
    order = torch.sort(batch["attention_mask"], dim=1, stable=True).indices
    for key in keys:
        if key in batch:
            batch[key] = torch.gather(batch[key], 1, order)
    return batch


def encode_blip2(
    processor,
    conversations: list[list[dict]],
    images: list[list[Any]],
    add_generation_prompt: bool = True,
    videos: list[list[Any]] | None = None,
) -> Any:
    """input_ids/attention_mask [B, N + T], pixel_values [B, 3, H, W]."""
    return encode_query_token_rows(processor, conversations, images, add_generation_prompt, videos, "blip2")


def encode_query_token_rows(processor, conversations, images, add_generation_prompt, videos, family: str) -> Any:
    """One image per row; the processor puts the N query-token placeholders in front of the text (BLIP-2 and
    InstructBLIP alike), with the padding moved in front of them."""
    pixels = one_image_each(images, family, videos)
    texts = [render_chat(processor, conv, add_generation_prompt) for conv in conversations]
    batch = processor(text=texts, images=pixels, padding=True, return_tensors="pt")
    if getattr(processor.tokenizer, "padding_side", "right") == "left":
        batch = pads_first(batch)
    return batch
