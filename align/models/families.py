"""Per-family facts: which transformers classes, where each part of the model lives, processor fixes.

Parts are named the same way in every family so freezing policies can name them:
  vision          the image encoder (CLIP/SigLIP/ViT tower, Qwen's ViT, Chameleon's VQ-VAE, Fuyu has none)
  connector       what maps vision features into the LLM: LLaVA's projector, BLIP-2's Q-Former + query tokens +
                  language projection, IDEFICS' perceiver resampler, Qwen's patch merger, Kosmos-2's
                  image-to-text projection, Fuyu's linear patch embedding
  xattn           gated cross-attention blocks inserted into the LLM (Flamingo / IDEFICS only)
  language_model  the decoder: embeddings, blocks, final norm
  lm_head         the output projection (tied to the embeddings in some families)
A parameter belongs to the part with the longest matching prefix, so "model.visual.merger" (connector) wins
over "model.visual" (vision).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from align.errors import ModelError, lookup

PART_NAMES = ("vision", "connector", "xattn", "language_model", "lm_head")


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.model_type values that map to this family
    parts: dict[str, tuple[str, ...]]  # part name -> parameter-name prefixes
    auto_class_name: str = "AutoModelForImageTextToText"
    # True when the chat template writes the image placeholder itself; False for processors that insert image
    # tokens on their own (IDEFICS, BLIP-2, InstructBLIP, Fuyu, Kosmos-2).
    template_places_images: bool = True
    supports_video: bool = False
    fix_processor_path: str | None = None  # "module:function" applied to every loaded processor
    fix_model_path: str | None = None  # "module:function" applied to every loaded model
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def auto_class(self):
        import transformers

        return getattr(transformers, self.auto_class_name)

    @property
    def fix_processor(self) -> Callable | None:
        return _resolve(self.fix_processor_path)

    @property
    def fix_model(self) -> Callable | None:
        return _resolve(self.fix_model_path)


def _resolve(target: str | None) -> Callable | None:
    if target is None:
        return None
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


_LLAVA_PARTS = {
    "vision": ("model.vision_tower",),
    "connector": ("model.multi_modal_projector", "model.image_newline", "model.vision_resampler"),
    "language_model": ("model.language_model",),
    "lm_head": ("lm_head",),
}
_QWEN_PARTS = {
    "vision": ("model.visual",),
    "connector": ("model.visual.merger",),
    "language_model": ("model.language_model",),
    "lm_head": ("lm_head",),
}
# BLIP-2/InstructBLIP classes have no inner `.model`: parts hang off the top. No lm_head part: OPT ties the output
# projection to the input embeddings, so it is counted (and frozen) with language_model (T5 variants' untied head
# at language_model.lm_head also falls under language_model).
_BLIP_PARTS = {
    "vision": ("vision_model",),
    "connector": ("qformer", "query_tokens", "language_projection"),
    "language_model": ("language_model",),
}

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("llava", ("llava",), _LLAVA_PARTS),
        Family("llava_next", ("llava_next",), _LLAVA_PARTS),
        Family("llava_next_video", ("llava_next_video",), _LLAVA_PARTS, supports_video=True),
        Family("qwen2_vl", ("qwen2_vl",), _QWEN_PARTS, supports_video=True),
        Family("qwen2_5_vl", ("qwen2_5_vl",), _QWEN_PARTS, supports_video=True),
        Family(
            "idefics",
            ("idefics",),
            {
                "vision": ("model.vision_model",),
                "connector": ("model.perceiver_resampler",),
                "xattn": ("model.gated_cross_attn_layers",),
                "language_model": ("model.embed_tokens", "model.layers", "model.norm"),
                "lm_head": ("lm_head",),
            },
            template_places_images=False,
        ),
        Family("blip2", ("blip-2",), _BLIP_PARTS, template_places_images=False),
        Family("instructblip", ("instructblip",), _BLIP_PARTS, template_places_images=False),
        Family(
            "chameleon",
            ("chameleon",),
            {
                "vision": ("model.vqmodel",),
                "language_model": ("model.embed_tokens", "model.layers", "model.norm"),
                "lm_head": ("lm_head",),
            },
        ),
        Family(
            "fuyu",
            ("fuyu",),
            {
                "connector": ("model.vision_embed_tokens",),
                "language_model": ("model.language_model",),
                "lm_head": ("lm_head",),
            },
            template_places_images=False,
            fix_processor_path="align.models.patches:patch_fuyu_processor",
        ),
        Family(
            "kosmos2",
            ("kosmos-2",),
            # No inner `.model`; no lm_head part: text_model.lm_head is tied to the input embeddings.
            {
                "vision": ("vision_model",),
                "connector": ("image_to_text_projection",),
                "language_model": ("text_model",),
            },
            template_places_images=False,
            # Batched (left-padded) generation needs this model fix; see its docstring.
            fix_model_path="align.models.patches:patch_kosmos2_generation",
        ),
    ]
}

_BY_MODEL_TYPE = {mt: f.name for f in FAMILIES.values() for mt in f.model_types}


def get_family(name: str) -> Family:
    return lookup(FAMILIES, "family", name)


def family_of(config) -> str:
    """The family of a loaded transformers config (by `model_type`)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in _BY_MODEL_TYPE:
        raise ModelError(
            f"model type '{model_type}' is not a supported family; supported: {', '.join(sorted(FAMILIES))}"
        )
    return _BY_MODEL_TYPE[model_type]


def part_of(param_name: str, family: Family) -> str | None:
    """The part a parameter belongs to: longest matching prefix wins; None when no part claims it."""
    best, best_len = None, -1
    for part, prefixes in family.parts.items():
        for prefix in prefixes:
            if (param_name == prefix or param_name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = part, len(prefix)
    return best


def count_parameters_by_part(model, family: Family) -> dict[str, dict[str, int]]:
    """{part: {"total": n, "trainable": n}}; parameters no part claims are reported under "other"."""
    counts: dict[str, dict[str, int]] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:  # tied weights count once, under the first name
            continue
        seen.add(id(param))
        part = part_of(name, family) or "other"
        slot = counts.setdefault(part, {"total": 0, "trainable": 0})
        slot["total"] += param.numel()
        if param.requires_grad:
            slot["trainable"] += param.numel()
    return counts
