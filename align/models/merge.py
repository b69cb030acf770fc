"""Merge a PEFT LoRA adapter into its base model and save a plain transformers checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from align.errors import ModelError


def adapter_base(adapter_dir: str | Path) -> str:
    """The base model an adapter was trained on, from its adapter_config.json."""
    config_path = Path(adapter_dir) / "adapter_config.json"
    if not config_path.is_file():
        raise ModelError(f"{adapter_dir}: no adapter_config.json; not a PEFT adapter folder")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{config_path}: base_model_name_or_path is empty; pass the base model explicitly")
    if config.get("peft_type") not in (None, "LORA"):
        raise ModelError(f"{adapter_dir}: a {config['peft_type']} adapter cannot be merged into the weights "
                         "(only LoRA can); load it with peft.PeftModel.from_pretrained instead")
    return base


def merge_adapter(adapter_dir: str | Path, out: str | Path, base: str | Path | None = None,
                  dtype: str = "auto") -> Path:
    """Load base + adapter, fold the LoRA deltas into the weights, save model + processor to `out` atomically."""
    from peft import PeftModel

    from align.files import atomic_output_dir
    from align.models.load import load_model_and_processor

    base = base or adapter_base(adapter_dir)
    model, processor = load_model_and_processor(base, dtype=dtype)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    load_extra_trainables(merged, Path(adapter_dir))
    out = Path(out)
    with atomic_output_dir(out) as tmp:
        merged.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return out


def load_extra_trainables(model, adapter_dir: Path) -> None:
    """Put back what trained beside the adapter (see align.models.freeze.EXTRA_WEIGHTS)."""
    from safetensors.torch import load_file

    from align.models.freeze import EXTRA_WEIGHTS

    path = adapter_dir / EXTRA_WEIGHTS
    if not path.is_file():
        return
    _, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if unexpected:
        raise ModelError(f"{path}: weights the merged model does not have: {', '.join(unexpected[:5])}")
