"""Batched generation with a local model, for the builders that need responses (STIC, POVID stage 2, BPO).

Any family of `align.models.families` (optionally with a PEFT adapter) generates from images; a plain causal LM
(a rewriter prompted to inject errors) generates from text. Batches are left-padded by the family encoders, so
one `generate` call serves the whole batch; every batch is seeded, so sampling is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from align.errors import ModelError


class Generator:
    def __init__(self, model: str, adapter: str | None = None, dtype: str = "float32", batch_size: int = 8,
                 device: str | None = None):
        import torch

        from align.models.families import family_of
        from align.models.load import load_config, load_model_and_processor

        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.family: str | None = family_of(load_config(model))
        except ModelError as exc:
            if "not a supported family" not in str(exc):
                raise
            self.family = None  # a text-only causal LM
        if self.family is not None:
            self.model, self.processor = load_model_and_processor(model, dtype=dtype)
            self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        else:
            self.model, self.processor = _load_causal_lm(model, dtype)
            self.tokenizer = self.processor
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter)
        self.model.to(self.device).eval()

    def generate(self, conversations: Sequence[list[dict]], images: Sequence[list[Any]] | None = None,
                 seed: int = 0, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0) -> list[str]:
        """One response per conversation (its last turn is the user's); `images[i]` are its images."""
        images = images or [[] for _ in conversations]
        out: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            batch_convs = conversations[start:start + self.batch_size]
            batch_images = images[start:start + self.batch_size]
            out.extend(self._generate_batch(batch_convs, batch_images, seed + start, max_new_tokens, temperature,
                                            top_p))
        return out

    def _inputs(self, conversations, images):
        if self.family is None:
            texts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                     for c in conversations]
            return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        from align.models.inputs import encode, split_media

        split = [split_media(per) for per in images]
        videos = [v for _, v in split]
        return encode(self.processor, self.family, list(conversations), [i for i, _ in split],
                      add_generation_prompt=True, videos=videos if any(videos) else None)

    def _generate_batch(self, conversations, images, seed, max_new_tokens, temperature, top_p) -> list[str]:
        import torch

        batch = self._inputs(conversations, images).to(self.device)
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {
            "do_sample": False}
        with torch.no_grad():
            generated = self.model.generate(**batch, max_new_tokens=max_new_tokens,
                                            pad_token_id=self.tokenizer.pad_token_id, **sampling)
        new_tokens = generated[:, batch["input_ids"].shape[1]:]  # left padding: prompts end at the same column
        return [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


    def answer_logprobs(self, conversations: Sequence[list[dict]], images: Sequence[list[Any]] | None,
                        answers: dict[str, Sequence[str]]) -> list[dict[str, float]]:
        """For each conversation, log P(first token of the answer) summed over each answer's spellings, e.g.
        {"yes": ["Yes", "yes"], "no": ["No", "no"]} -> {"yes": log(P(Yes) + P(yes)), "no": ...} at the first
        position of the assistant's turn (RLAIF-V's labeler compares P(yes) + P(Yes) with P(no) + P(No))."""
        import torch

        token_ids = {name: sorted({self._first_token(s) for s in spellings}) for name, spellings in answers.items()}
        images = images or [[] for _ in conversations]
        out: list[dict[str, float]] = []
        for start in range(0, len(conversations), self.batch_size):
            batch = self._inputs(conversations[start:start + self.batch_size],
                                 images[start:start + self.batch_size]).to(self.device)
            with torch.no_grad():
                logits = self.model(**batch).logits[:, -1].float()  # [B, V]: left padding, prompts end last
            logp = logits.log_softmax(dim=-1)
            for row in logp:
                out.append({name: float(torch.logsumexp(row[ids], dim=0)) for name, ids in token_ids.items()})
        return out

    def _first_token(self, text: str) -> int:
        """The first token of `text` as an answer: the first token where [prompt + answer] departs from the
        generation prompt, so a space or marker the template puts before answers is part of it (" Yes", not
        "Yes")."""
        conversation = [{"role": "user", "content": [{"type": "text", "text": "?"}]}]
        answered = conversation + [{"role": "assistant", "content": [{"type": "text", "text": text}]}]
        template = self.processor if hasattr(self.processor, "apply_chat_template") else self.tokenizer
        prompt = template.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        full = template.apply_chat_template(answered, tokenize=False)
        a = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        b = self.tokenizer(full, add_special_tokens=False)["input_ids"]
        k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        if k >= len(b):
            raise ModelError(f"the chat template adds no tokens for the answer {text!r}")
        if k < len(a):
            raise ModelError(f"the chat template's generation prompt is not a prefix of an answered conversation "
                             f"(token {k}); cannot read the first answer token of {text!r}")
        return int(b[k])


def _load_causal_lm(path: str, dtype: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.models.load import torch_dtype

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load '{path}' as a VLM or a causal LM: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"'{path}' has no chat template; a rewriter is prompted as a chat model")
    return model, tokenizer
