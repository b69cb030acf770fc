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

Finer groups, where a part is not enough for the trainable-part policies of `align.models.freeze` (GROUP_NAMES):
  projector         the layer(s) that map vision features into the LLM's embedding space (LLaVA stage 1,
                    MiniGPT-4's single linear layer: for BLIP-2 only the language projection, not the Q-Former)
  qformer           BLIP-2's Q-Former and its learned query tokens
  resampler         IDEFICS' perceiver resampler
  vision_layers     the vision encoder's list of layers (the policy picks the last one the connector reads)
  vision_post_norm  the vision encoder's final norm, where the connector reads its output (LLaVA and IDEFICS
                    read CLIP hidden states taken before it, so they have none)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from align.errors import ModelError, lookup
from align.registry import import_object

PART_NAMES = ("vision", "connector", "xattn", "language_model", "lm_head")
GROUP_NAMES = ("projector", "qformer", "resampler", "vision_layers", "vision_post_norm")


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
    # TRL's fused LM head (per-token log-probs without [B, T, V] logits) reads `base_model(...).last_hidden_state`
    # and projects it through the output embeddings. Families whose backbone output has no such field (BLIP-2,
    # InstructBLIP, Kosmos-2) or whose forward edits the logits (Chameleon masks its image-code tokens) take the
    # log-probs from the model's own logits instead (align.models.lm_head).
    fused_lm_head: bool = True
    # `pixel_values` holds one row per image placeholder token of the batch's input_ids, rows of all examples
    # concatenated (Fuyu's patches): a row's pixels are as many as its placeholders.
    pixels_per_placeholder: bool = False
    fix_processor_path: str | None = None  # "module:function" applied to every loaded processor
    fix_model_path: str | None = None  # "module:function" applied to every loaded model
    # What the family's own papers train in instruction tuning; `align sft` uses it when no policy is given.
    natural_policy: str = "projector+llm"
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group name (GROUP_NAMES) -> prefixes
    # Train-policy atom (align.models.freeze.POLICIES) -> why it cannot apply to this family.
    not_applicable: dict[str, str] = field(default_factory=dict)
    # model_type of the decoder where the config has no text_config to say it (IDEFICS builds a Llama-style
    # decoder into its own model class).
    decoder_type: str | None = None
    # Its language model takes a batch's rows concatenated into one, position ids restarting at each row and no
    # attention mask (transformers builds the block-diagonal causal mask from the positions), and its image
    # features fill the image tokens in order: `flat_batches` trains without padding. Checked per family by
    # tests/integration/test_flat_batches.py; M-RoPE families (Qwen2-VL) compute positions from the mask.
    flat_batches: bool = False
    # The module that encodes images from pixels alone (no trainable connector inside unless it is frozen too):
    # `shared_image_encoding` lets one call's output serve every model call of a step that passes the same
    # pixels (align.models.layout_forward). None: not shared.
    vision_encoder: str | None = None
    # `vision_encoder` names a list of layers, each run on the previous one's output and nothing reading their
    # intermediate outputs (Qwen2-VL's blocks, before its trainable merger): memoised as one chain.
    vision_layers_only: bool = False
    # Its decoder takes a 4-D attention mask and explicit position ids, and its image features fill the image
    # tokens in order: preference batches can run in a shared layout (`prefix_sharing`, `padding_free`; checked
    # per family by tests/integration/test_shared_layouts.py).
    shared_layouts: bool = False
    # Multimodal rotary positions (Qwen2-VL's M-RoPE, [3, B, T]) computed by the model's `get_rope_index`.
    mrope: bool = False
    # Its multimodal model (`model.model`) embeds the tokens and then encodes the images through
    # `get_image_features`, nothing else: under ZeRO-3 a rank without images encodes a blank one there
    # (align.models.zero3_images), so ranks with and without images run the same collectives.
    blank_image_features: bool = False

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
    return import_object(target)


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

_LLAVA_GROUPS = {
    "projector": ("model.multi_modal_projector",),
    "vision_layers": ("model.vision_tower.encoder.layers",),
}
# LLaVA-NeXT appends a learned image_newline vector after each row of tile features; it trains with the projector.
_LLAVA_NEXT_GROUPS = {**_LLAVA_GROUPS, "projector": ("model.multi_modal_projector", "model.image_newline")}
_QWEN_GROUPS = {"projector": ("model.visual.merger",), "vision_layers": ("model.visual.blocks",)}
_BLIP_GROUPS = {
    "projector": ("language_projection",),
    "qformer": ("qformer", "query_tokens"),
    "vision_layers": ("vision_model.encoder.layers",),
    "vision_post_norm": ("vision_model.post_layernorm",),
}
# PEFT's adaption prompt (the `adapter` policy) recomputes each wrapped attention's queries the Llama way (q_proj,
# then 1-D rotary), so it only fits decoders that compute their queries exactly like that.
_NO_ADAPTER_QWEN = ("its decoder rotates queries with multimodal rotary positions (M-RoPE), and PEFT's adaption "
                    "prompt recomputes them with 1-D rotary")
_NO_ADAPTER_BLIP = ("its language model (OPT or Flan-T5) is not a decoder PEFT's adaption prompt supports "
                    "(Llama-style only: llama, mistral)")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("llava", ("llava",), _LLAVA_PARTS, groups=_LLAVA_GROUPS, flat_batches=True,
               vision_encoder="model.vision_tower", shared_layouts=True, blank_image_features=True),
        Family("llava_next", ("llava_next",), _LLAVA_PARTS, groups=_LLAVA_NEXT_GROUPS, flat_batches=True,
               vision_encoder="model.vision_tower", shared_layouts=True),
        Family("llava_next_video", ("llava_next_video",), _LLAVA_PARTS, supports_video=True,
               groups=_LLAVA_NEXT_GROUPS, vision_encoder="model.vision_tower", shared_layouts=True),
        Family("qwen2_vl", ("qwen2_vl",), _QWEN_PARTS, supports_video=True, groups=_QWEN_GROUPS,
               not_applicable={"adapter": _NO_ADAPTER_QWEN}, vision_encoder="model.visual.blocks",
               vision_layers_only=True, shared_layouts=True, mrope=True, blank_image_features=True),
        Family("qwen2_5_vl", ("qwen2_5_vl",), _QWEN_PARTS, supports_video=True, groups=_QWEN_GROUPS,
               not_applicable={"adapter": _NO_ADAPTER_QWEN}, vision_encoder="model.visual.blocks",
               vision_layers_only=True, shared_layouts=True, mrope=True, blank_image_features=True),
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
            groups={"resampler": ("model.perceiver_resampler",),
                    "vision_layers": ("model.vision_model.encoder.layers",)},
            not_applicable={"projector": "it has no projector: a perceiver resampler feeds gated cross-attention "
                                         "layers (use resampler, or resampler+xattn as Flamingo does)"},
            decoder_type="llama",
            natural_policy="resampler+xattn",
        ),
        Family("blip2", ("blip-2",), _BLIP_PARTS, template_places_images=False, fused_lm_head=False,
               groups=_BLIP_GROUPS, not_applicable={"adapter": _NO_ADAPTER_BLIP}, natural_policy="qformer"),
        Family("instructblip", ("instructblip",), _BLIP_PARTS, template_places_images=False, fused_lm_head=False,
               groups=_BLIP_GROUPS, not_applicable={"adapter": _NO_ADAPTER_BLIP}, natural_policy="qformer"),
        Family(
            "chameleon",
            ("chameleon",),
            {
                "vision": ("model.vqmodel",),
                "language_model": ("model.embed_tokens", "model.layers", "model.norm"),
                "lm_head": ("lm_head",),
            },
            not_applicable={
                "projector": "it has no projector: its VQ-VAE turns images into discrete tokens of the LLM's own "
                             "vocabulary",
                "vision": "its VQ-VAE image tokenizer outputs discrete token ids, so no gradient reaches it",
                "vision-last": "its VQ-VAE image tokenizer outputs discrete token ids, so no gradient reaches it",
                "adapter": "its attention normalises queries and keys per head (q_norm, k_norm), which PEFT's "
                           "adaption prompt does not recompute",
            },
            fused_lm_head=False,
            natural_policy="llm",
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
            pixels_per_placeholder=True,
            fix_processor_path="align.models.patches:patch_fuyu_processor",
            groups={"projector": ("model.vision_embed_tokens",)},
            not_applicable={
                "vision": "it has no vision encoder: image patches enter the decoder through one linear layer "
                          "(train it with projector)",
                "vision-last": "it has no vision encoder: image patches enter the decoder through one linear layer "
                               "(train it with projector)",
                "adapter": "its Persimmon decoder fuses query/key/value into one projection and normalises q and k, "
                           "which PEFT's adaption prompt does not support",
            },
            natural_policy="all",
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
            groups={"projector": ("image_to_text_projection",),
                    "vision_layers": ("vision_model.model.encoder.layers",),
                    "vision_post_norm": ("vision_model.model.post_layernorm",)},
            not_applicable={"adapter": "its decoder has sinusoidal positions and no rotary embedding, while PEFT's "
                                       "adaption prompt recomputes queries with Llama's rotary"},
            fused_lm_head=False,
            natural_policy="vision-last+llm",
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


def unwrapped_name(param_name: str) -> str:
    """A parameter name as the unwrapped model spells it (a PeftModel prefixes "base_model.model."). Weights PEFT
    injects (lora_A, adaption_prompt, modules_to_save copies) keep the path of the module they attach to, so they
    fall under that module's part."""
    return param_name.removeprefix("base_model.model.")


def count_parameters_by_part(model, family: Family) -> dict[str, dict[str, int]]:
    """{part: {"total": n, "trainable": n}}; parameters no part claims are reported under "other".

    `model` may be PEFT-wrapped; a modules_to_save module counts twice (frozen original, trainable copy)."""
    counts: dict[str, dict[str, int]] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:  # tied weights count once, under the first name
            continue
        seen.add(id(param))
        part = part_of(unwrapped_name(name), family) or "other"
        slot = counts.setdefault(part, {"total": 0, "trainable": 0})
        slot["total"] += param.numel()
        if param.requires_grad:
            slot["trainable"] += param.numel()
    return counts
