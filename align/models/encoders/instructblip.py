"""InstructBLIP: as BLIP-2, plus the Q-Former reads the instruction (the user turns' text) only.

Left alone, the processor hands the Q-Former the whole rendered chat, answers included: while training, the query
tokens that prefix the text would carry the very answer the loss asks the LLM to predict, and at generation time
(no answer yet) the Q-Former would see something else. InstructBLIP was trained with the instruction alone.
"""

from __future__ import annotations

from typing import Any

from align.models.encoders.blip2 import encode_query_token_rows


def instruction(conversation: list[dict]) -> str:
    """The text of the user turns, one per line (image items and other roles left out)."""
    lines = []
    for message in conversation:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            lines.append(content)
        elif isinstance(content, list):
            lines.extend(item["text"] for item in content if item.get("type") == "text")
    return "\n".join(line.strip() for line in lines if line.strip())


def encode_instructblip(
    processor,
    conversations: list[list[dict]],
    images: list[list[Any]],
    add_generation_prompt: bool = True,
    videos: list[list[Any]] | None = None,
) -> Any:
    """input_ids/attention_mask [B, N + T], pixel_values [B, 3, H, W], qformer_input_ids/attention_mask [B, Q]."""
    batch = encode_query_token_rows(processor, conversations, images, add_generation_prompt, videos, "instructblip")
    # Truncated to the Q-Former tokenizer's model_max_length: longer would run past the Q-Former's positions.
    qformer = processor.qformer_tokenizer([instruction(conv) for conv in conversations], padding=True,
                                          truncation=True, return_tensors="pt")
    batch["qformer_input_ids"] = qformer["input_ids"]
    batch["qformer_attention_mask"] = qformer["attention_mask"]
    return batch
