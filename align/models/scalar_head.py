"""A VLM with a scalar head: the reward model of `align reward` and the critic (value model) of `align ppo`.

The head is a zero-initialised linear layer [H] -> 1 on the language model's last hidden states, so a fresh head
scores every sequence 0 (LLaVA-RLHF's reward and value heads). A reward is read at a sequence's last token; a value
is read at every token. The backbone is any family's model, whole or wrapped by PEFT (LoRA).

On disk: the backbone as `align sft` saves it (a whole checkpoint, or a PEFT adapter on its base) plus
`scalar_head.safetensors` and `scalar_head.json` (what the head is for and how its scores are read), and the
processor; `load_scalar_head_model` folds an adapter into its base and puts the head back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from align.errors import ModelError

HEAD_WEIGHTS = "scalar_head.safetensors"
HEAD_CONFIG = "scalar_head.json"


def _unwrapped(model):
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


class ScalarHeadModel(nn.Module):
    """backbone + head; `forward(**model_inputs)` -> [B, T] float32 scores, one per input token."""

    accepts_loss_kwargs = False  # trainers return mean losses: Trainer divides them over accumulation steps

    def __init__(self, backbone, family: str, info: dict[str, Any] | None = None):
        super().__init__()
        from align.models.families import get_family

        self.backbone = backbone
        self.family = family
        self.info = dict(info or {})  # saved to HEAD_CONFIG: kind, reward prompt, base model...
        hidden = _unwrapped(backbone).config.get_text_config().hidden_size
        self.head = nn.Linear(hidden, 1, dtype=torch.float32)
        self.reset_head()
        # TRL's fused LM head reads `base_model(...).last_hidden_state`; the families it does not fit (their
        # language model sees more than input_ids, or its output is not at the top level) go through
        # output_hidden_states instead.
        self._through_base_model = get_family(family).fused_lm_head

    @property
    def config(self):
        return _unwrapped(self.backbone).config

    def reset_head(self) -> None:
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def gradient_checkpointing_enable(self, **kwargs):
        _unwrapped(self.backbone).gradient_checkpointing_enable(**kwargs)

    def hidden_states(self, **inputs) -> torch.Tensor:
        """[B, T, H] last hidden states aligned with input_ids (families whose language model also sees query
        tokens put them first; the last T positions are the text's)."""
        inputs = {k: v for k, v in inputs.items() if k not in ("labels", "use_cache")}
        if self._through_base_model:
            base = _unwrapped(self.backbone).base_model
            if base is self.backbone:
                raise ModelError(f"{type(self.backbone).__name__} exposes no language backbone for a scalar head")
            hidden = base(**inputs, use_cache=False).last_hidden_state
        else:
            out = self.backbone(**inputs, output_hidden_states=True, use_cache=False)
            states = getattr(out, "hidden_states", None)
            if states is None and getattr(out, "language_model_outputs", None) is not None:
                states = out.language_model_outputs.hidden_states
            if states is None:
                raise ModelError(f"{type(self.backbone).__name__} returned no hidden states for a scalar head")
            hidden = states[-1]
        return hidden[:, -inputs["input_ids"].shape[1]:]

    def forward(self, **inputs) -> torch.Tensor:
        hidden = self.hidden_states(**inputs)
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)  # [B, T]

    def save_pretrained(self, out: str | Path, state_dict: dict | None = None, processor=None) -> Path:
        """Backbone (adapter or whole model) + head weights + HEAD_CONFIG (+ the processor) into `out`.
        `state_dict`: this module's full state dict when the caller gathered it (ZeRO-3)."""
        from safetensors.torch import save_file

        from align.models.freeze import save_trained, sub_state_dict

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        state_dict = self.state_dict() if state_dict is None else state_dict
        save_trained(self.backbone, out, sub_state_dict(state_dict, "backbone."))
        head = {k: v.detach().float().contiguous().cpu() for k, v in sub_state_dict(state_dict, "head.").items()}
        save_file(head, str(out / HEAD_WEIGHTS))
        info = {**self.info, "family": self.family}
        (out / HEAD_CONFIG).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if processor is not None:
            processor.save_pretrained(str(out))
        return out


def last_token_scores(scores: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] per-token scores -> [B] at each row's last attended token (left or right padding)."""
    width = attention_mask.shape[1]
    last = width - 1 - attention_mask.flip(1).to(torch.long).argmax(dim=1)  # [B]
    return scores.gather(1, last.unsqueeze(1)).squeeze(1)


def is_scalar_head_folder(path: str | Path) -> bool:
    return (Path(path) / HEAD_CONFIG).is_file()


def read_head_info(path: str | Path) -> dict[str, Any]:
    config = Path(path) / HEAD_CONFIG
    if not config.is_file():
        raise ModelError(f"{path}: no {HEAD_CONFIG}; not a reward model saved by `align reward`")
    return json.loads(config.read_text(encoding="utf-8"))


def load_scalar_head_model(path: str | Path, dtype: str = "float32", head: bool = True):
    """(ScalarHeadModel, processor) from a folder `save_pretrained` wrote; an adapter backbone is merged into its
    base in memory. `head=False` keeps a fresh zero head (a critic starting from a reward model's backbone).

    The weights load whole even while a ZeRO-3 run is set up (a merge needs them whole); DeepSpeed partitions
    them when the model joins an engine."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from align.models.load import load_model_and_processor, load_processor, zero3_off
    from align.models.merge import adapter_base, load_extra_trainables

    path = Path(path)
    info = read_head_info(path)
    with zero3_off():
        if (path / "adapter_config.json").is_file():
            backbone, _ = load_model_and_processor(adapter_base(path), dtype=dtype)
            backbone = PeftModel.from_pretrained(backbone, str(path)).merge_and_unload()
            load_extra_trainables(backbone, path)
        else:
            backbone, _ = load_model_and_processor(path, dtype=dtype)
    processor = load_processor(path, info["family"])
    model = ScalarHeadModel(backbone, info["family"], {k: v for k, v in info.items() if k != "family"})
    if head:
        weights = load_file(str(path / HEAD_WEIGHTS))
        model.head.load_state_dict(weights)
    return model, processor
