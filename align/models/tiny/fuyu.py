"""Tiny Fuyu: no vision tower; a linear layer embeds raw 8x8 patches straight into a Persimmon decoder.

An image of h x w pixels (resized to fit 32x32, aspect kept) becomes ceil(h/8) rows of ceil(w/8) `|SPEAKER|`
tokens, each row closed by `|NEWLINE|`, then `<s>`; the [n_patches, 8*8*3] patches replace the `|SPEAKER|`
embeddings. Token counts depend on the image's aspect ratio, so batches are padded (on the left, by the processor).
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
    VOCAB,
    chat_template,
    save_tiny,
    training_corpus,
)

# id 0 must be padding: the processor forces `pad_token_id = 0`. `<0x00>`-`<0x04>` are Fuyu's box/point/answer
# markers (byte tokens in the real vocabulary); the processor writes `<0x04>` (beginning of answer) itself.
_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<0x00>", "<0x01>", "<0x02>", "<0x03>", "<0x04>"]
# Image placeholders are ordinary vocabulary entries, not added tokens (see _tokenizer).
_IMAGE_TOKENS = ["|SPEAKER|", "|NEWLINE|"]


def _tokenizer(seed: int):
    """A SentencePiece-style BPE: "▁" marks word starts and one "▁" is prepended to every text segment.

    The processor tokenizes `|SPEAKER|...|NEWLINE|<s>` and drops the first id, expecting SentencePiece's leading
    "▁" piece. If the image tokens were added tokens, no "▁" would be produced and the first image token would be
    lost; as ordinary vocabulary entries, isolated by the pre-tokenizer and matched whole (`ignore_merges`), the
    segment becomes "▁", "|SPEAKER|", ... exactly as with the real tokenizer.
    """
    import json

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\|SPEAKER\||\|NEWLINE\|"), behavior="isolated"),
        pre_tokenizers.Split("▁", behavior="merged_with_next"),  # merges never cross a word start
    ])
    alphabet = [chr(c) for c in range(33, 127)] + ["▁"]  # printable ASCII round-trips; anything else is <unk>
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.normalizer, trainer_tok.pre_tokenizer = normalizer, pre_tokenizer
    trainer_tok.train_from_iterator(training_corpus(seed), trainer=trainers.BpeTrainer(
        vocab_size=VOCAB - len(_IMAGE_TOKENS), special_tokens=_SPECIALS, initial_alphabet=alphabet,
        show_progress=False))
    # Rebuilt from the trained vocabulary and merges, plus the image tokens as whole entries.
    trained = json.loads(trainer_tok.to_str())["model"]  # the Python BPE model has no vocab/merges getters
    vocab = dict(trained["vocab"])
    for token in _IMAGE_TOKENS:
        vocab[token] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", ignore_merges=True))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.add_special_tokens(_SPECIALS)
    # padding_side as an init argument so it is saved; the processor pads on the left anyway.
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", padding_side="left")


def _image_processor():
    from transformers import FuyuImageProcessor

    # Images are shrunk to fit 32x32 (never enlarged), padded to 32x32; only the unpadded patches become tokens.
    return FuyuImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                              patch_size={"height": PATCH, "width": PATCH})


def build_fuyu(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import FuyuConfig, FuyuForCausalLM, FuyuProcessor, PersimmonConfig

    from align.models.patches import patch_fuyu_processor

    torch.manual_seed(seed)
    tok = _tokenizer(seed)
    text_config = PersimmonConfig(
        vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, max_position_embeddings=512, qk_layernorm=True, hidden_act="relu2",
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    config = FuyuConfig(text_config=text_config, image_size=IMAGE_SIZE, patch_size=PATCH, num_channels=3,
                        image_token_id=tok.convert_tokens_to_ids("|SPEAKER|"), tie_word_embeddings=False,
                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = FuyuForCausalLM(config).eval()
    processor = FuyuProcessor(image_processor=_image_processor(), tokenizer=tok)
    patch_fuyu_processor(processor)
    # The processor writes the image tokens and `<s>` itself; it swallows a `chat_template` argument.
    processor.chat_template = chat_template(image_token=None)
    model.generation_config.pad_token_id = tok.pad_token_id
    return save_tiny(model, processor, out, "fuyu", seed)
