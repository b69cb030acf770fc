"""Tiny Kosmos-2: CLIP-style vision + a latent-query projection + a Magneto-style decoder, grounding-capable.

The projection turns [B, 17, 64] patch states into [B, 64, 64] image embeddings (64 learned latent queries) that
overwrite the 64 positions `image_embeds_position_mask` marks between `<image>` and `</image>`, right after `<s>`.
The processor also adds 11 tag tokens and 1,024 `<patch_index_XXXX>` tokens (a 32x32 grid of box corners) to the
vocabulary; they dominate the parameter count, so the base vocabulary is kept small.
"""

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

# Kosmos-2's XLM-R conventions. The processor uses ids unk+1 .. unk+64 as the 64 image placeholder ids.
_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
_BASE_VOCAB = 320  # 256 byte symbols + specials + a few merges; 1,035 processor tokens come on top
# Fixed by the processor (`num_image_tokens` = 64, not a config field), so the config's latent_query_num follows.
_IMAGE_TOKENS = 64


def _tokenizer(seed: int):
    return train_bpe_tokenizer(_SPECIALS, vocab_size=_BASE_VOCAB, seed=seed, bos_token="<s>", eos_token="</s>",
                               pad_token="<pad>", unk_token="<unk>")


def build_kosmos2(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        CLIPImageProcessor,
        Kosmos2Config,
        Kosmos2ForConditionalGeneration,
        Kosmos2Processor,
    )

    torch.manual_seed(seed)
    tok = _tokenizer(seed)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=True)
    processor = Kosmos2Processor(image_processor=image_processor, tokenizer=tok)
    # The processor writes `<s>` and the image tokens itself; it swallows a `chat_template` argument.
    processor.chat_template = chat_template(image_token=None)
    config = Kosmos2Config(
        # After the processor: it added its 1,035 tokens to the tokenizer.
        text_config={"vocab_size": len(tok), "embed_dim": HIDDEN, "layers": LAYERS, "ffn_dim": INTERMEDIATE,
                     "attention_heads": HEADS, "max_position_embeddings": 512, "dropout": 0.0,
                     "attention_dropout": 0.0, "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
                     "eos_token_id": tok.eos_token_id},
        vision_config={"hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS,
                       "num_attention_heads": HEADS, "image_size": IMAGE_SIZE, "patch_size": PATCH},
        latent_query_num=_IMAGE_TOKENS,
    )
    model = Kosmos2ForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return save_tiny(model, processor, out, "kosmos2", seed)
