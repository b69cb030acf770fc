"""Tiny LLaVA (CLIP vision + projector + Llama), LLaVA-NeXT (any-resolution tiles) and LLaVA-NeXT-Video."""

from __future__ import annotations

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


def _tokenizer(seed: int):
    tok = train_bpe_tokenizer(_SPECIALS, seed=seed, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                              unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    return tok


def _vision_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=HIDDEN)


def _text_config(tok):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                       num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                       max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, tie_word_embeddings=False)


def _image_processor(cls, **extra):
    return cls(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
               do_center_crop=True, **extra)


def build_llava(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    torch.manual_seed(seed)
    tok = _tokenizer(seed)
    n_image_tokens = (IMAGE_SIZE // PATCH) ** 2  # CLS dropped by the "default" feature strategy
    config = LlavaConfig(vision_config=_vision_config(), text_config=_text_config(tok),
                         image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=n_image_tokens,
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", pad_token_id=tok.pad_token_id)
    model = LlavaForConditionalGeneration(config).eval()
    processor = LlavaProcessor(image_processor=_image_processor(CLIPImageProcessor), tokenizer=tok,
                               patch_size=PATCH, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, image_token="<image>",
                               chat_template=chat_template("<image>"))
    model.generation_config.pad_token_id = tok.pad_token_id
    return save_tiny(model, processor, out, "llava", seed)
