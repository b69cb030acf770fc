"""Tiny LLaVA (CLIP vision + projector + Llama), LLaVA-NeXT (any-resolution tiles) and LLaVA-NeXT-Video."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from align.models.tiny._common import (
    HEADS,
    HIDDEN,
    IMAGE_SIZE,
    INTERMEDIATE,
    LAYERS,
    PATCH,
    chat_template,
    save_tiny,
    train_bpe_tokenizer,
)

_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>"]


@dataclass(frozen=True)
class LlavaSize:
    """Widths of a random LLaVA: the Llama text model and the CLIP vision tower, and the image grid."""

    hidden: int = HIDDEN
    layers: int = LAYERS
    heads: int = HEADS
    intermediate: int = INTERMEDIATE
    vision_hidden: int = HIDDEN
    vision_layers: int = LAYERS
    vision_intermediate: int = INTERMEDIATE
    image_size: int = IMAGE_SIZE
    patch: int = PATCH
    # Std of the random normal init of the text model and projector. transformers' 0.02 suits widths near 768;
    # at width 128 it leaves attention uniform and the image tokens averaged away at the start of training.
    init_std: float = 0.02
    # Std of the vision tower's position embeddings; None keeps CLIP's 0.02. A patch embedding of 32x32x3 pixels
    # comes out with std ~2, so after the pre-LayerNorm a 0.02 position is ~1% of a token: the language model
    # cannot tell the image tokens apart by place, gets no gradient that would grow them, and they stay at
    # 0.02 through training (measured). At 1.0 where each token is starts as a third of what it carries.
    vision_position_std: float | None = None


# `align models tiny --family llava --size NAME`. Parameters with the 512-token vocabulary: tiny 236,736;
# small 929,920 (a wider language model that sees 64 px images, where a 10 px shape keeps its corners, as 4x4
# patches of 16 px; init std ~ 1/sqrt(width)); grid 1,076,928 (the quickstart's model: small's language model
# seeing a 96 px grid world as 3x3 patches of 32 px, one per grid cell, so each shape lies in one image token);
# base 20,474,752 (benchmarks: per-step costs where the matrix products, not Python overhead, dominate).
LLAVA_SIZES = {
    "tiny": LlavaSize(),
    "small": LlavaSize(hidden=128, layers=4, heads=4, intermediate=256, image_size=64, patch=16, init_std=0.08),
    "grid": LlavaSize(hidden=128, layers=4, heads=4, intermediate=256, image_size=96, patch=32, init_std=0.08,
                      vision_position_std=1.0),
    "base": LlavaSize(hidden=384, layers=8, heads=6, intermediate=1024, vision_hidden=384, vision_layers=4,
                      vision_intermediate=1024, image_size=64, patch=8),
}


def _tokenizer(seed: int):
    return train_bpe_tokenizer(_SPECIALS, seed=seed, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                               unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})


def _vision_config(size: LlavaSize = LLAVA_SIZES["tiny"]):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=size.vision_hidden, intermediate_size=size.vision_intermediate,
                            num_hidden_layers=size.vision_layers, num_attention_heads=HEADS,
                            image_size=size.image_size, patch_size=size.patch, projection_dim=size.vision_hidden)


def _text_config(tok, size: LlavaSize = LLAVA_SIZES["tiny"]):
    from transformers import LlamaConfig

    image_tokens = (size.image_size // size.patch) ** 2
    return LlamaConfig(vocab_size=len(tok), hidden_size=size.hidden, intermediate_size=size.intermediate,
                       num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.heads,
                       max_position_embeddings=max(512, image_tokens + 512), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, tie_word_embeddings=False, initializer_range=size.init_std)


def _image_processor(cls, image_size: int = IMAGE_SIZE, **extra):
    return cls(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
               do_center_crop=True, **extra)


def build_llava(out: Path, seed: int = 0, size: str = "tiny", image_size: int | None = None,
                patch_size: int | None = None) -> Path:
    """`size` from LLAVA_SIZES; `image_size` / `patch_size` replace its image grid (e.g. 224 px in 14 px patches,
    256 image tokens as LLaVA's CLIP at 224 px)."""
    import dataclasses

    import torch
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from align.errors import lookup

    dims = lookup(LLAVA_SIZES, "llava size", size)
    dims = dataclasses.replace(dims, image_size=image_size or dims.image_size, patch=patch_size or dims.patch)
    torch.manual_seed(seed)
    tok = _tokenizer(seed)
    n_image_tokens = (dims.image_size // dims.patch) ** 2  # CLS dropped by the "default" feature strategy
    config = LlavaConfig(vision_config=_vision_config(dims), text_config=_text_config(tok, dims),
                         image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=n_image_tokens,
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", pad_token_id=tok.pad_token_id)
    model = LlavaForConditionalGeneration(config).eval()
    if dims.vision_position_std is not None:
        with torch.no_grad():
            model.model.vision_tower.embeddings.position_embedding.weight.normal_(0.0, dims.vision_position_std)
    processor = LlavaProcessor(image_processor=_image_processor(CLIPImageProcessor, dims.image_size), tokenizer=tok,
                               patch_size=dims.patch, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, image_token="<image>",
                               chat_template=chat_template("<image>"))
    model.generation_config.pad_token_id = tok.pad_token_id
    return save_tiny(model, processor, out, "llava", seed)


# Any-resolution canvases (height, width), multiples of the 32 px crop: a wide, a tall and a square 2x2 grid.
# The same list must sit in the model config (to unpad features) and the image processor (to tile pixels), or
# the number of <image> tokens the processor writes differs from the features the model scatters.
PINPOINTS = [[IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE], [2 * IMAGE_SIZE, 2 * IMAGE_SIZE]]


def build_llava_next(out: Path, seed: int = 0) -> Path:
    """LLaVA-NeXT: each image is a 32x32 overview plus 32x32 tiles of its best pinpoint canvas.

    An image of H x W gives 16 overview tokens + the unpadded tile grid (4 rows x 4-8 columns of 8 px patches)
    + one image_newline per grid row; e.g. 40x30 (W x H) -> canvas 32x64 -> 16 + 4*6 + 4 = 44 tokens.
    """
    import torch
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    torch.manual_seed(seed)
    tok = _tokenizer(seed)
    config = LlavaNextConfig(vision_config=_vision_config(), text_config=_text_config(tok),
                             image_token_index=tok.convert_tokens_to_ids("<image>"),
                             image_seq_length=(IMAGE_SIZE // PATCH) ** 2, image_grid_pinpoints=PINPOINTS,
                             vision_feature_layer=-1, vision_feature_select_strategy="default",
                             projector_hidden_act="gelu", pad_token_id=tok.pad_token_id)
    model = LlavaNextForConditionalGeneration(config).eval()
    image_processor = _image_processor(LlavaNextImageProcessor, image_grid_pinpoints=PINPOINTS)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, patch_size=PATCH,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   image_token="<image>", chat_template=chat_template("<image>"))
    model.generation_config.pad_token_id = tok.pad_token_id
    return save_tiny(model, processor, out, "llava_next", seed)


def build_llava_next_video(out: Path, seed: int = 0) -> Path:
    """LLaVA-NeXT-Video: images as in LLaVA-NeXT; every video frame is 32x32 -> 4x4 patches, average-pooled with
    stride 2 to 2x2, so a video of F frames gives 4F <video> tokens."""
    import torch
    from transformers import (
        LlavaNextImageProcessor,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
        LlavaNextVideoProcessor,
        LlavaNextVideoVideoProcessor,
    )

    torch.manual_seed(seed)
    tok = _tokenizer(seed)
    grid = IMAGE_SIZE // PATCH  # 4 patches a side per frame
    stride = 2
    config = LlavaNextVideoConfig(vision_config=_vision_config(), text_config=_text_config(tok),
                                  image_token_index=tok.convert_tokens_to_ids("<image>"),
                                  video_token_index=tok.convert_tokens_to_ids("<video>"),
                                  image_seq_length=grid**2, video_seq_length=(grid // stride) ** 2,
                                  image_grid_pinpoints=PINPOINTS, spatial_pool_mode="average",
                                  spatial_pool_stride=stride, vision_feature_layer=-1,
                                  vision_feature_select_strategy="default", projector_hidden_act="gelu",
                                  pad_token_id=tok.pad_token_id)
    model = LlavaNextVideoForConditionalGeneration(config).eval()
    image_processor = _image_processor(LlavaNextImageProcessor, image_grid_pinpoints=PINPOINTS)
    # Frames are resized and center-cropped like the image overview; every given frame is kept (no sampling).
    video_processor = _image_processor(LlavaNextVideoVideoProcessor)
    processor = LlavaNextVideoProcessor(video_processor=video_processor, image_processor=image_processor,
                                        tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default",
                                        num_additional_image_tokens=1, image_token="<image>", video_token="<video>",
                                        chat_template=chat_template("<image>", video_token="<video>"))
    model.generation_config.pad_token_id = tok.pad_token_id
    return save_tiny(model, processor, out, "llava_next_video", seed)
