"""Tiny Chameleon: a VQ-VAE turns each image into discrete codes that are ordinary vocabulary tokens of a
Llama-style decoder (early fusion: no connector, image codes share the text embedding table).

A 32x32 image goes through 3 stride-2 downsamples -> a 4x4 latent -> 16 codes, so the processor writes
<racm3:break> + 16 x <image> + <eoss> per image and the model swaps the 16 <image> embeddings for its codes'.
"""

from __future__ import annotations

from pathlib import Path

from align.models.tiny._common import (
    HEADS,
    HIDDEN,
    IMAGE_SIZE,
    INTERMEDIATE,
    LAYERS,
    VOCAB,
    chat_template,
    save_tiny,
    train_bpe_tokenizer,
)

CODES = 64  # VQ codebook entries, one vocabulary token each
CHANNELS = 32  # VQ-VAE conv width: GroupNorm uses 32 groups, so widths must be multiples of 32
LEVELS = 4  # 4 resolution levels = 3 downsamples: 32 px -> 4x4 latent
IMAGE_TOKENS = (IMAGE_SIZE // 2 ** (LEVELS - 1)) ** 2  # 16

_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<racm3:break>", "<eoss>", "<reserved08706>"]


def code_token(code: int) -> str:
    """The vocabulary token of VQ code `code`: its digits spelled A-J, e.g. 12 -> "IMGIMGBCZ" (Chameleon's
    `ChameleonImageVocabularyMapping` parses exactly this form back to the code)."""
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def build_chameleon(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        ChameleonConfig,
        ChameleonForConditionalGeneration,
        ChameleonImageProcessor,
        ChameleonProcessor,
        ChameleonVQVAEConfig,
    )

    torch.manual_seed(seed)
    # <racm3:break> / <eoss> open and close an image; <reserved08706> is the separator the processor appends to
    # every prompt in chat mode. Code tokens come last so text ids match the other families' layout.
    specials = _SPECIALS + [code_token(i) for i in range(CODES)]
    tok = train_bpe_tokenizer(specials, vocab_size=VOCAB + CODES, seed=seed, bos_token="<s>", eos_token="</s>",
                              pad_token="<pad>", unk_token="<unk>", sep_token="<reserved08706>")
    vq = ChameleonVQVAEConfig(embed_dim=CHANNELS, num_embeddings=CODES, latent_channels=CHANNELS,
                              resolution=IMAGE_SIZE, base_channels=CHANNELS, channel_multiplier=[1] * LEVELS,
                              num_res_blocks=1, attn_resolutions=None)
    config = ChameleonConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                             num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                             max_position_embeddings=512, vq_config=vq, vocabulary_map=tok.get_vocab(),
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    model = ChameleonForConditionalGeneration(config).eval()
    # Pixels scaled to [-1, 1] (mean 1, std 1 after x 0.0078), as Chameleon's VQ-VAE expects.
    image_processor = ChameleonImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                              crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = ChameleonProcessor(image_processor=image_processor, tokenizer=tok, image_seq_length=IMAGE_TOKENS,
                                   image_token="<image>")
    # ChameleonProcessor takes no chat_template argument; set it after construction (reloads re-attach it from
    # chat_template.jinja, see align.models.load).
    processor.chat_template = chat_template("<image>", bos="<s>")
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return save_tiny(model, processor, out, "chameleon", seed)
