"""Tiny random checkpoints of every supported family, built offline (`align models tiny`).

Each builder saves a folder that `load_model_and_processor` (and transformers' Auto classes) load.
"""

from __future__ import annotations

from pathlib import Path

from align.errors import lookup
from align.registry import import_object

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


# Families whose builder takes `size` (a name of its sizes table).
SIZED_FAMILIES = {"llava": "align.models.tiny.llava:LLAVA_SIZES"}


def build_tiny(family: str, out: str | Path, seed: int = 0, size: str | None = None, image_size: int | None = None,
               patch_size: int | None = None) -> Path:
    """Build and save the tiny checkpoint of `family` under `out`; returns the folder. `size` picks a width for
    the families in SIZED_FAMILIES (default: the smallest); `image_size` and `patch_size` replace its image grid."""
    builder = import_object(lookup(TINY_BUILDERS, "family", family))
    if size is None and image_size is None and patch_size is None:
        return builder(Path(out), seed=seed)
    _check_size(family, size, image_size, patch_size)
    grid = {k: v for k, v in (("image_size", image_size), ("patch_size", patch_size)) if v is not None}
    return builder(Path(out), seed=seed, size=size or "tiny", **grid)


def _check_size(family: str, size: str | None, image_size: int | None = None, patch_size: int | None = None) -> None:
    from align.errors import ConfigError

    if family not in SIZED_FAMILIES:
        raise ConfigError(f"--size, --image-size and --patch-size are available for {', '.join(SIZED_FAMILIES)} "
                          f"only, not {family}")
    dims = lookup(import_object(SIZED_FAMILIES[family]), f"{family} size", size or "tiny")
    image, patch = image_size or dims.image_size, patch_size or dims.patch
    if image <= 0 or patch <= 0 or image % patch:
        raise ConfigError(f"--image-size {image} is not a whole number of --patch-size {patch} px patches")


def build_tiny_atomic(family: str, out: str | Path, seed: int = 0, size: str | None = None,
                      image_size: int | None = None, patch_size: int | None = None) -> Path:
    """`build_tiny` into a temporary folder renamed to `out` when complete (nothing half-written)."""
    from align.files import atomic_output_dir

    lookup(TINY_BUILDERS, "family", family)  # fail before creating anything
    if size is not None or image_size is not None or patch_size is not None:
        _check_size(family, size, image_size, patch_size)
    out = Path(out)
    with atomic_output_dir(out) as tmp:
        build_tiny(family, tmp, seed=seed, size=size, image_size=image_size, patch_size=patch_size)
    return out
