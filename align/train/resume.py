"""Resuming from a Trainer checkpoint with the weights actually restored.

transformers 5.24's `Trainer._load_from_checkpoint` reads `model.safetensors` and calls
`model.load_state_dict(state_dict, strict=False)`. `save_pretrained` writes the checkpoint-format key names
(LLaVA: `language_model.model.layers.0...`), which differ from the module names in memory
(`model.language_model.layers.0...`), so nothing loads, only a warning is logged, and the resumed run silently
continues from the base weights. Loading the checkpoint through `from_pretrained`, which maps the names, and
copying the state strictly fixes it. Drop this once a resumed run matches the uninterrupted one without it
(tests/integration/test_sft_runs.py checks that).
"""

from __future__ import annotations

from pathlib import Path


class CheckpointResumeMixin:
    """Mixed into align's TRL trainer subclasses, before the TRL class."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from peft import PeftModel

        model = self.model if model is None else model
        folder = Path(resume_from_checkpoint)
        has_full_weights = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
        if isinstance(model, PeftModel) or not has_full_weights or self.is_deepspeed_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        dtype = next(model.parameters()).dtype
        restored = type(model).from_pretrained(str(folder), dtype=dtype)
        missing, unexpected = model.load_state_dict(restored.state_dict(), strict=False)
        if missing or unexpected:
            raise RuntimeError(f"checkpoint {folder} does not match the model: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        return None
