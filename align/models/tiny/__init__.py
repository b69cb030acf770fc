"""Tiny random checkpoints of every supported family, built offline (`align models tiny`).

Each builder saves a folder that `load_model_and_processor` (and transformers' Auto classes) load.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from align.errors import lookup

# family -> "module:function"; imported lazily so listing families never imports torch.
TINY_BUILDERS: dict[str, str] = {
    "llava": "align.models.tiny.llava:build_llava",
    "llava_next": "align.models.tiny.llava:build_llava_next",
    "llava_next_video": "align.models.tiny.llava:build_llava_next_video",
    "qwen2_vl": "align.models.tiny.qwen:build_qwen2_vl",
    "qwen2_5_vl": "align.models.tiny.qwen:build_qwen2_5_vl",
    "idefics": "align.models.tiny.idefics:build_idefics",
    "blip2": "align.models.tiny.blip:build_blip2",
    "instructblip": "align.models.tiny.blip:build_instructblip",
    "chameleon": "align.models.tiny.chameleon:build_chameleon",
    "fuyu": "align.models.tiny.fuyu:build_fuyu",
    "kosmos2": "align.models.tiny.kosmos:build_kosmos2",
}


def build_tiny(family: str, out: str | Path, seed: int = 0) -> Path:
    """Build and save the tiny checkpoint of `family` under `out`; returns the folder."""
    target = lookup(TINY_BUILDERS, "family", family)
    module_name, func_name = target.split(":")
    builder = getattr(importlib.import_module(module_name), func_name)
    return builder(Path(out), seed=seed)


def build_tiny_atomic(family: str, out: str | Path, seed: int = 0) -> Path:
    """`build_tiny` into a temporary folder renamed to `out` when complete (nothing half-written)."""
    from align.data.io import atomic_output_dir

    lookup(TINY_BUILDERS, "family", family)  # fail before creating anything
    out = Path(out)
    with atomic_output_dir(out) as tmp:
        build_tiny(family, tmp, seed=seed)
    return out
