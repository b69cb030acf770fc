"""One way to turn chat messages + images into model inputs, whatever the family.

Most processors take the chat-template text and the images (`processor(text=..., images=...)`); families whose
processors need something else (IDEFICS' interleaved lists, ...) register an encoder in ENCODERS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from align.registry import import_object

# family -> "module:function" with the signature of `default_encode`
ENCODERS: dict[str, str] = {
    "idefics": "align.models.encoders.idefics:encode_idefics",
    "blip2": "align.models.encoders.blip2:encode_blip2",
    "instructblip": "align.models.encoders.instructblip:encode_instructblip",
    "fuyu": "align.models.encoders.fuyu:encode_fuyu",
}


def render_chat(processor, messages: list[dict], add_generation_prompt: bool) -> str:
    return processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)


def default_encode(
    processor,
    conversations: list[list[dict]],
    images: list[list[Any]],
    add_generation_prompt: bool = True,
    videos: list[list[Any]] | None = None,
) -> Any:
    """Batch of conversations (chat messages) with their images -> processor outputs ([B, T] ids, pixels...).

    `videos[i]` are example i's videos in placeholder order, each a list of frames (PIL images or [H, W, C]
    arrays); a bare list of frames counts as example i's one video. Processors take the flat list of videos.
    """
    texts = [render_chat(processor, conv, add_generation_prompt) for conv in conversations]
    kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
    flat_images = [img for per_example in images for img in per_example]
    if flat_images:
        kwargs["images"] = flat_images
    flat_videos = [v for per_example in (videos or []) for v in _videos_of(per_example)]
    if flat_videos:
        kwargs["videos"] = flat_videos
    return processor(**kwargs)


def _videos_of(per_example: list[Any]) -> list[Any]:
    # Without this, two examples given as bare frame lists would flatten into ONE video of all their frames.
    if per_example and _is_frame(per_example[0]):
        return [list(per_example)]
    return list(per_example)


def _is_frame(item: Any) -> bool:
    """A single frame: a PIL image or a 3-D [H, W, C] array (a video is a list of these or a 4-D array)."""
    return getattr(item, "ndim", None) == 3 or hasattr(item, "getpixel")


def encode(
    processor,
    family: str,
    conversations: list[list[dict]],
    images: list[list[Any]],
    add_generation_prompt: bool = True,
    videos: list[list[Any]] | None = None,
):
    """Model inputs for a batch; `images[i]` / `videos[i]` are example i's images / videos in placeholder order
    (a video is a list of frames, see `default_encode`)."""
    target = ENCODERS.get(family)
    if target is None:
        fn = default_encode
    else:
        fn = import_object(target)
    return fn(processor, conversations, images, add_generation_prompt=add_generation_prompt, videos=videos)


def split_media(loaded: Sequence[Any]) -> tuple[list[Any], list[list[Any]]]:
    """A record's loaded `images` list -> (still images, videos); a video is a list of frames."""
    images = [m for m in loaded if not isinstance(m, list)]
    videos = [m for m in loaded if isinstance(m, list)]
    return images, videos
