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


def restore_saved(model, folder) -> None:
    """Put what `save_pretrained` wrote into `folder` back into `model`: an adapter (plus its extra trainables) into
    a PEFT model, else a whole checkpoint (loaded through `from_pretrained`, which maps the key names), strictly."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from align.models.freeze import EXTRA_WEIGHTS

    folder = Path(folder)
    if isinstance(model, PeftModel):
        from peft.utils import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
        if result.unexpected_keys:
            raise RuntimeError(f"checkpoint {folder}: adapter weights the model lacks: {result.unexpected_keys[:5]}")
        if (folder / EXTRA_WEIGHTS).is_file():
            model.get_base_model().load_state_dict(load_file(str(folder / EXTRA_WEIGHTS)), strict=False)
        return
    restored = type(model).from_pretrained(str(folder), dtype=next(model.parameters()).dtype)
    missing, unexpected = model.load_state_dict(restored.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {folder} does not match the model: missing {missing[:5]}, unexpected "
                           f"{unexpected[:5]}")


def restore_scalar_head_model(model, folder) -> None:
    """A `ScalarHeadModel` (reward or value model) back from what its `save_pretrained` wrote into `folder`."""
    from pathlib import Path

    from safetensors.torch import load_file

    from align.models.scalar_head import HEAD_WEIGHTS

    restore_saved(model.backbone, folder)
    model.head.load_state_dict(load_file(str(Path(folder) / HEAD_WEIGHTS)))
