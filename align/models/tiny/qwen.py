"""Tiny Qwen2-VL and Qwen2.5-VL: a ViT on 14 px patches, a 2x2 patch merger, a Qwen2 decoder with M-RoPE.

Pixel budget 56*56 .. 112*112: a 32x32 image is upscaled to 56x56 -> 4x4 patches -> 2x2 merged = 4 <|image_pad|>
tokens; a 40x30 one becomes 84x56 -> 6x4 patches -> 6 tokens. Frames pair up in time (temporal patch 2), so a
4-frame 32x32 video is a 2x4x4 grid -> 8 <|video_pad|> tokens.
"""

from __future__ import annotations

from pathlib import Path

from align.models.tiny._common import HEADS, HIDDEN, INTERMEDIATE, LAYERS, save_tiny, train_bpe_tokenizer

PATCH = 14
MERGE = 2  # 2x2 neighbouring patches merge into one LLM token
TEMPORAL = 2  # frames per temporal patch; an image is repeated to fill one
MIN_PIXELS = 56 * 56  # smallest canvas: 4x4 patches = 2x2 merged tokens
MAX_PIXELS = 112 * 112  # largest canvas: 8x8 patches = 16 merged tokens
# head_dim 16 -> 8 rotary frequencies, split over (time, height, width) positions.
MROPE_SECTION = [2, 3, 3]
VISION_WIDTH = 32  # ViT width; the merger maps 4 * 32 -> HIDDEN
VISION_HEADS = 2

_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
             "<|image_pad|>", "<|video_pad|>"]

# Qwen's chat layout without the default system prompt (it would only lengthen tiny sequences). The assistant
# turn, its <|im_end|> included, sits in {% generation %} so trainers can mask everything else.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{% set items = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set items = message['content'] %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% for item in items %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{{ '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{% for item in items %}"
    "{% if item['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif item['type'] == 'video' %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{{ '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _tokenizer(seed: int):
    return train_bpe_tokenizer(_SPECIALS, seed=seed, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def _token_ids(tok) -> dict[str, int]:
    """The config mirrors the tokenizer's ids: the model finds placeholders and vision spans by these ids."""
    names = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
             "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}
    return {key: tok.convert_tokens_to_ids(token) for key, token in names.items()}


def _text_config(cls, tok):
    return cls(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
               num_attention_heads=HEADS, num_key_value_heads=HEADS // 2, max_position_embeddings=512,
               rope_parameters={"rope_type": "default", "mrope_section": MROPE_SECTION},
               bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _processor(cls, tok):
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    sizes = dict(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=PATCH, merge_size=MERGE,
                 temporal_patch_size=TEMPORAL)
    image_processor = Qwen2VLImageProcessor(**sizes)
    # cap_pixels_per_frame: the behaviour transformers makes default soon; setting it silences a warning per call.
    video_processor = Qwen2VLVideoProcessor(**sizes, cap_pixels_per_frame=True)
    return cls(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
               chat_template=QWEN_CHAT_TEMPLATE)


def _finish(model, processor, tok, out: Path, family: str, seed: int) -> Path:
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = None
    return save_tiny(model, processor, out, family, seed)


def build_qwen2_vl(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
        Qwen2VLTextConfig,
        Qwen2VLVisionConfig,
    )

    torch.manual_seed(seed)
    tok = _tokenizer(seed)
    # Qwen2-VL's vision `hidden_size` is the merger's output width, i.e. the LLM's hidden size.
    vision = Qwen2VLVisionConfig(depth=LAYERS, embed_dim=VISION_WIDTH, hidden_size=HIDDEN, num_heads=VISION_HEADS,
                                 mlp_ratio=2, patch_size=PATCH, spatial_merge_size=MERGE,
                                 temporal_patch_size=TEMPORAL)
    config = Qwen2VLConfig(text_config=_text_config(Qwen2VLTextConfig, tok), vision_config=vision,
                           **_token_ids(tok), tie_word_embeddings=False)
    model = Qwen2VLForConditionalGeneration(config).eval()
    return _finish(model, _processor(Qwen2VLProcessor, tok), tok, out, "qwen2_vl", seed)


def build_qwen2_5_vl(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2_5_VLTextConfig,
        Qwen2_5_VLVisionConfig,
    )

    torch.manual_seed(seed)
    tok = _tokenizer(seed)
    # Qwen2.5-VL's vision `hidden_size` is the ViT width and `out_hidden_size` the merger's output (LLM width).
    # window_size 56 px = 2x2 merged tokens: block 0 attends within windows, block 1 (fullatt) over the image.
    vision = Qwen2_5_VLVisionConfig(depth=LAYERS, hidden_size=VISION_WIDTH, intermediate_size=2 * VISION_WIDTH,
                                    num_heads=VISION_HEADS, out_hidden_size=HIDDEN, patch_size=PATCH,
                                    spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL, window_size=56,
                                    fullatt_block_indexes=[LAYERS - 1], tokens_per_second=2)
    config = Qwen2_5_VLConfig(text_config=_text_config(Qwen2_5_VLTextConfig, tok), vision_config=vision,
                              **_token_ids(tok), tie_word_embeddings=False)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    return _finish(model, _processor(Qwen2_5_VLProcessor, tok), tok, out, "qwen2_5_vl", seed)
