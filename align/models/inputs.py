"""One way to turn chat messages + images into model inputs, whatever the family.

Most processors take the chat-template text and the images (`processor(text=..., images=...)`); families whose
processors need something else (IDEFICS' interleaved lists, ...) register an encoder in ENCODERS.
"""

from __future__ import annotations

import importlib
from typing import Any

# family -> "module:function" with the signature of `default_encode`
ENCODERS: dict[str, str] = {}


def render_chat(processor, messages: list[dict], add_generation_prompt: bool) -> str:
    return processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)


def default_encode(
    processor,
    conversations: list[list[dict]],
    images: list[list[Any]],
    add_generation_prompt: bool = True,
    videos: list[list[Any]] | None = None,
) -> Any:
    """Batch of conversations (chat messages) with their images -> processor outputs ([B, T] ids, pixels...)."""
    texts = [render_chat(processor, conv, add_generation_prompt) for conv in conversations]
    kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
    flat_images = [img for per_example in images for img in per_example]
    if flat_images:
        kwargs["images"] = flat_images
    if videos and any(videos):
        kwargs["videos"] = [v for per_example in videos for v in per_example]
    return processor(**kwargs)


def encode(
    processor,
    family: str,
    conversations: list[list[dict]],
    images: list[list[Any]],
    add_generation_prompt: bool = True,
    videos: list[list[Any]] | None = None,
):
    """Model inputs for a batch; `images[i]` are example i's images in placeholder order."""
    target = ENCODERS.get(family)
    if target is None:
        fn = default_encode
    else:
        module_name, func_name = target.split(":")
        fn = getattr(importlib.import_module(module_name), func_name)
    return fn(processor, conversations, images, add_generation_prompt=add_generation_prompt, videos=videos)
