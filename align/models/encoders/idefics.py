"""IDEFICS (v1): images go into the text stream where the messages put them, so text after an image attends to it.

IDEFICS' text never contains image features; gated cross-attention lets each text position attend to the images
`image_attention_mask` ([B, T, n_images]) allows, which is every image *before* it in the text (until `</s>`). The
processor builds that mask only from its interleaved call, `processor(text=[["User:", img, "text ..."]])`;
`apply_chat_template` + `processor(text=..., images=...)` puts each image at the start or the end of the text
instead. So the chat is rendered with a marker where each image stands, split there, and the pieces interleaved
with the images.
"""

from __future__ import annotations

from typing import Any

from align.errors import DataError
from align.models.inputs import render_chat

# Stands in for an image while the chat template renders; nothing a template or a user writes looks like it.
IMAGE_MARK = "\x00<align:image>\x00"


def _marked(conversation: list[dict]) -> list[dict]:
    """The conversation with each `{"type": "image"}` item replaced by a text item holding IMAGE_MARK."""
    out = []
    for message in conversation:
        content = message.get("content")
        if isinstance(content, list):
            content = [{"type": "text", "text": IMAGE_MARK} if item.get("type") == "image" else item
                       for item in content]
        out.append({**message, "content": content})
    return out


def interleave(processor, conversation: list[dict], images: list[Any], add_generation_prompt: bool,
               row: int = 0) -> list[Any]:
    """One example as the processor's interleaved list: ["User:", img, "Is there ...? Assistant:"]."""
    text = render_chat(processor, _marked(conversation), add_generation_prompt)
    bos = getattr(processor.tokenizer, "bos_token", None)
    if bos and text.startswith(bos):
        text = text[len(bos):]  # the processor starts every example with `<s>` itself
    pieces = text.split(IMAGE_MARK)
    if len(pieces) - 1 != len(images):
        raise DataError("batch", f"the messages hold {len(pieces) - 1} image item(s) but {len(images)} image(s) "
                        "came with them", row=row)
    sample: list[Any] = []
    for i, piece in enumerate(pieces):
        # The processor strips spaces around each piece ("User: " -> "User:"); empty pieces are dropped so it
        # never sees two texts in a row (it would insert <end_of_utterance> between them).
        if piece.strip(" "):
            sample.append(piece)
        if i < len(images):
            sample.append(images[i])
    return sample


def encode_idefics(
    processor,
    conversations: list[list[dict]],
    images: list[list[Any]],
    add_generation_prompt: bool = True,
    videos: list[list[Any]] | None = None,
) -> Any:
    """input_ids/attention_mask [B, T] (padded on the tokenizer's side), pixel_values [B, n_images, 3, H, W]
    (zeros where an example has fewer images), image_attention_mask [B, T, n_images]."""
    if videos and any(videos):
        raise DataError("batch", "idefics takes no videos; pass the frames as images instead")
    samples = [interleave(processor, conv, imgs, add_generation_prompt, row=i)
               for i, (conv, imgs) in enumerate(zip(conversations, images, strict=True))]
    # add_end_of_utterance_token=False: only the template decides where a turn ends.
    return processor(text=samples, padding=True, return_tensors="pt", add_end_of_utterance_token=False)
