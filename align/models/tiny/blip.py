"""Tiny BLIP-2 and InstructBLIP: BLIP vision + Q-Former (learned queries cross-attending to patches) + OPT.

The Q-Former turns the [B, 17, 64] patch states into [B, N_QUERY, 64] query states; a linear projection maps them
into the OPT embedding space, where they replace the N_QUERY `<image>` tokens the processor puts at the start of
every text. InstructBLIP's Q-Former also reads the instruction text (its own BERT-style tokenizer, saved under
`qformer_tokenizer/`), so the queries pick image features that depend on the question.
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
    training_corpus,
)

N_QUERY = 8  # query tokens = image tokens per example (real BLIP-2: 32); config and processor must agree
_QFORMER_MAX_TOKENS = 128  # Q-Former position table; the Q-Former tokenizer truncates instructions to it
_QFORMER_VOCAB = 256
# OPT's conventions: `</s>` is both BOS and EOS. No `<image>` here: the processor adds it (a tokenizer that already
# has an `image_token` attribute makes the processor fail with "'str' object has no attribute 'content'").
_SPECIALS = ["<pad>", "</s>", "<unk>"]


def _tokenizer(seed: int):
    return train_bpe_tokenizer(_SPECIALS, seed=seed, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                               unk_token="<unk>")


def _qformer_tokenizer(seed: int):
    """A lower-casing WordPiece tokenizer with BERT's specials and `[CLS] text [SEP]`, like InstructBLIP's.

    The vocabulary is counted, not trained: tokenizers' WordPieceTrainer orders tied entries differently from run
    to run, and a seed must give the same checkpoint.
    """
    import string
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(word for line in training_corpus(seed)
                    for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))
    # Every lower-case ASCII word can be spelled: each printable character alone and as a continuation piece.
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = specials + chars + ["##" + c for c in chars]
    frequent = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1]
    vocab += frequent[: max(0, _QFORMER_VOCAB - len(vocab))]
    tok = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", specials.index("[CLS]")), ("[SEP]", specials.index("[SEP]"))])
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=_QFORMER_MAX_TOKENS)


def _vision_config() -> dict:
    return {"hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS, "image_size": IMAGE_SIZE, "patch_size": PATCH}


def _qformer_config(**extra) -> dict:
    # One layer with cross-attention to the patches (frequency 1); encoder_hidden_size is set from the vision width.
    return {"hidden_size": HIDDEN, "num_hidden_layers": 1, "num_attention_heads": HEADS,
            "intermediate_size": INTERMEDIATE, "cross_attention_frequency": 1,
            "max_position_embeddings": _QFORMER_MAX_TOKENS, **extra}


def _text_config(tok):
    from transformers import OPTConfig

    # word_embed_proj_dim = hidden: no extra in/out projections around the decoder. Embeddings and LM head are
    # tied, as in the released OPT checkpoints.
    return OPTConfig(vocab_size=len(tok), hidden_size=HIDDEN, ffn_dim=INTERMEDIATE, num_hidden_layers=LAYERS,
                     num_attention_heads=HEADS, word_embed_proj_dim=HIDDEN, max_position_embeddings=512,
                     pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


def _image_processor():
    from transformers import BlipImageProcessor

    return BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def _template() -> str:
    # The processor puts the image tokens first; the template writes OPT's BOS, which the released OPT tokenizers
    # add on their own.
    return chat_template(image_token=None, bos="</s>")


def build_blip2(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

    torch.manual_seed(seed)
    tok = _tokenizer(seed)
    processor = Blip2Processor(image_processor=_image_processor(), tokenizer=tok, num_query_tokens=N_QUERY)
    processor.chat_template = _template()  # the processor swallows a `chat_template` argument
    # Built after the processor: it adds `<image>` to the tokenizer, so len(tok) now counts it.
    config = Blip2Config(vision_config=_vision_config(), qformer_config=_qformer_config(),
                         text_config=_text_config(tok), num_query_tokens=N_QUERY,
                         image_token_index=tok.convert_tokens_to_ids("<image>"))
    model = Blip2ForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return save_tiny(model, processor, out, "blip2", seed)


def build_instructblip(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration, InstructBlipProcessor

    torch.manual_seed(seed)
    tok = _tokenizer(seed)
    qformer_tok = _qformer_tokenizer(seed)
    processor = InstructBlipProcessor(image_processor=_image_processor(), tokenizer=tok,
                                      qformer_tokenizer=qformer_tok, num_query_tokens=N_QUERY)
    processor.chat_template = _template()
    config = InstructBlipConfig(
        vision_config=_vision_config(),
        qformer_config=_qformer_config(vocab_size=len(qformer_tok), pad_token_id=qformer_tok.pad_token_id),
        text_config=_text_config(tok), num_query_tokens=N_QUERY,
        image_token_index=tok.convert_tokens_to_ids("<image>"))
    model = InstructBlipForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return save_tiny(model, processor, out, "instructblip", seed)
