"""Pieces every tiny family shares: a locally trained tokenizer, a chat template, sizes, saving.

Tiny checkpoints are random weights with real configs, tokenizers and processors: transformers' Auto classes load
them, `generate` runs from an image prompt, and one forward+backward at batch 4 takes milliseconds on a CPU.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# Small widths keep every family well under a million parameters.
HIDDEN = 64
HEADS = 4
LAYERS = 2
INTERMEDIATE = 128
IMAGE_SIZE = 32
PATCH = 8
VOCAB = 512

_WORDS = (
    "circle disc disk dot ellipse oval square rectangle oblong bar triangle diamond rhombus lozenge pentagon "
    "hexagon star heart cross plus sign crescent half moon round shape red green blue yellow orange purple "
    "black gray grey violet small medium large top bottom left right center middle upper lower corner "
    "person bicycle car motorcycle airplane bus train truck boat traffic light dog cat horse sheep cow bird "
    "bottle cup chair couch table bed toilet laptop phone book clock vase umbrella pizza cake banana apple"
).split()
_TEMPLATES = (
    "Is there a {a} in the image? Yes, there is a {b} {a}.",
    "No, there is no {a} in the image.",
    "Describe this image in detail. The image shows a {b} {a} and two {a}s at the {c}.",
    "USER: What shapes do you see? ASSISTANT: I see a {b} {a} on the {c} of the picture.",
    "Answer the question using a single word or phrase. {a} {b} {c} 1 2 3 4 5 6 7 8 9 0 [0.125,0.250,0.5,1.0]",
    "<ref>the {a}</ref><box>(120,340),(560,780)</box> {{<12><34><56><78>}} [12, 34, 560, 999] [grounding]",
)


def training_corpus(seed: int = 0, n: int = 600) -> list[str]:
    """Deterministic sentences over the shapes/COCO vocabulary, so common words become single tokens."""
    rng = random.Random(seed)
    return [rng.choice(_TEMPLATES).format(a=rng.choice(_WORDS), b=rng.choice(_WORDS), c=rng.choice(_WORDS))
            for _ in range(n)]


def train_bpe_tokenizer(special_tokens: list[str], vocab_size: int = VOCAB, seed: int = 0, **named_tokens):
    """A byte-level BPE `PreTrainedTokenizerFast` trained locally (no hub), any text round-trips.

    `named_tokens` sets roles, e.g. bos_token="<s>", eos_token="</s>", pad_token="<pad>"; each must be listed in
    `special_tokens`, whose order fixes their ids (0, 1, 2, ...).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(seed), trainer=trainer)
    # Left padding for batched generation (trainers set their own side). A constructor argument, not an attribute
    # set afterwards: only init arguments are saved, so reloads would otherwise pad on the right.
    named_tokens.setdefault("padding_side", "left")
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named_tokens)


def chat_template(
    image_token: str | None = "<image>",
    video_token: str | None = None,
    user: str = "USER",
    assistant: str = "ASSISTANT",
    eos: str = "</s>",
    bos: str = "",
) -> str:
    """A Jinja chat template in the `ROLE: text` style of LLaVA-1.5.

    Images become `image_token` where `{"type": "image"}` items stand (None for processors that insert image
    tokens themselves). Assistant text sits inside `{% generation %}` so trainers can mask everything else.

    The generation prompt is `ASSISTANT:` with no trailing space; the space belongs to the answer, as in
    LLaVA-1.5. A prompt ending in a space tokenizes to a lone space token that training never shows before an
    answer (training sees `:` then ` Yes`), so generation and first-token likelihoods would start off-distribution.
    """
    image = f"{image_token}\\n" if image_token else ""
    video = f"{video_token}\\n" if video_token else ""
    return (
        "{{ '" + bos + "' }}"
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{% set role = 'SYSTEM' %}"
        "{% elif message['role'] == 'user' %}{% set role = '" + user + "' %}"
        "{% else %}{% set role = '" + assistant + "' %}{% endif %}"
        "{{ role + ':' }}"
        "{% if message['content'] is string %}{% set items = [{'type': 'text', 'text': message['content']}] %}"
        "{% else %}{% set items = message['content'] %}{% endif %}"
        "{% if message['role'] == 'assistant' %}{% generation %}{{ ' ' }}"
        "{% for item in items %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
        "{{ '" + eos + "' }}{% endgeneration %}"
        "{% else %}{{ ' ' }}"
        "{% for item in items %}"
        "{% if item['type'] == 'image' %}{{ '" + image + "' }}"
        "{% elif item['type'] == 'video' %}{{ '" + video + "' }}"
        "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
        "{% endfor %}{{ ' ' }}"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '" + assistant + ":' }}{% endif %}"
    )


def save_tiny(model, processor, out: Path, family: str, seed: int) -> Path:
    """Save model (safetensors), processor and tokenizer; record how the checkpoint was made."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    template = getattr(processor, "chat_template", None)
    if template and not (out / "chat_template.jinja").exists():
        (out / "chat_template.jinja").write_text(template, encoding="utf-8")
    n_params = sum(p.numel() for p in model.parameters())
    (out / "align_tiny.json").write_text(
        json.dumps({"family": family, "seed": seed, "parameters": n_params}, indent=2) + "\n", encoding="utf-8"
    )
    return out
