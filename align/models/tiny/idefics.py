"""Tiny IDEFICS (v1): CLIP-style vision + perceiver resampler + Llama with Flamingo gated cross-attention.

Text never holds image features: every decoder layer is followed by a gated cross-attention block whose queries are
the text states and whose keys/values are the resampled image latents; `image_attention_mask` ([B, T, n_images])
says which image each text position may attend to (those after the image, until the end of the document).
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

# `<image>` and `<fake_token_around_image>` are written by the processor around each image; `<end_of_utterance>`
# ends a turn (IDEFICS-instruct's convention). `</s>` stays the end of the *document*: the processor stops image
# attention after it, so a turn must not end with it or later turns could not see the image.
_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<fake_token_around_image>", "<image>", "<end_of_utterance>"]
_LATENTS = 8  # perceiver output: 8 image latents per image (real IDEFICS: 64)


def _tokenizer(seed: int):
    return train_bpe_tokenizer(_SPECIALS, seed=seed, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                               unk_token="<unk>")


def _config(tok):
    from transformers import IdeficsConfig

    return IdeficsConfig(
        vocab_size=len(tok), additional_vocab_size=0, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_position_embeddings=512,
        cross_layer_interval=1,  # one gated cross-attention block after every decoder layer
        # The defaults freeze the text and vision towers (IDEFICS fine-tuning recipes); align decides freezing itself.
        freeze_text_layers=False, freeze_vision_layers=False,
        # "zeros" (the default) closes every gate (tanh(0) = 0): images would not reach the loss or the output.
        alpha_initializer="ones",
        use_resampler=True,
        vision_config={"embed_dim": HIDDEN, "image_size": IMAGE_SIZE, "patch_size": PATCH,
                       "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS},
        perceiver_config={"use_resampler": True, "resampler_n_latents": _LATENTS, "resampler_depth": 1,
                          "resampler_n_heads": HEADS, "resampler_head_dim": HIDDEN // HEADS},
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )


def build_idefics(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import IdeficsForVisionText2Text, IdeficsImageProcessorPil, IdeficsProcessor

    torch.manual_seed(seed)
    tok = _tokenizer(seed)
    model = IdeficsForVisionText2Text(_config(tok)).eval()
    processor = IdeficsProcessor(image_processor=IdeficsImageProcessorPil(image_size=IMAGE_SIZE), tokenizer=tok,
                                 image_size=IMAGE_SIZE)
    # The processor writes `<s>` and the image tokens itself: the template writes neither. It swallows a
    # `chat_template` argument, hence the assignment.
    processor.chat_template = chat_template(image_token=None, user="User", assistant="Assistant",
                                            eos="<end_of_utterance>")
    eou = tok.convert_tokens_to_ids("<end_of_utterance>")
    model.generation_config.eos_token_id = [eou, tok.eos_token_id]  # a turn ends at <end_of_utterance>
    model.generation_config.pad_token_id = tok.pad_token_id
    return save_tiny(model, processor, out, "idefics", seed)
