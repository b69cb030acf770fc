"""Which shared layouts a DPO run uses: `shared_image_encoding`, `prefix_sharing`, `padding_free`.

Each setting is true, false or unset (auto: on wherever it is exact). Set true where it cannot apply, the run
stops with one line saying why; unset, it is switched off for that reason, and run.json records the outcome.
"""

from __future__ import annotations

from align.errors import ConfigError
from align.models.families import FAMILIES, get_family
from align.train.dpo.data import Layouts

SWITCHES = ("shared_image_encoding", "prefix_sharing", "padding_free")
# Attention implementations that take the layouts' 4-D masks (dense for sdpa and eager, block-sparse for flex).
PACKED_ATTENTION = ("sdpa", "eager", "flex_attention")


def resolve_layouts(cfg, family: str, variant, model) -> tuple[Layouts, dict]:
    """The run's `Layouts` and its record for run.json ({setting: {"used": bool, "why": reason when off}}).

    `model` is the policy after its train policy is applied (PEFT-wrapped or not)."""
    reasons = {name: _why_not(name, cfg, family, variant, model) for name in SWITCHES}
    record, used = {}, {}
    for name in SWITCHES:
        wanted, why = getattr(cfg, name), reasons[name]
        if wanted and why:
            raise ConfigError(f"{name}: {why}; set {name}=false")
        if wanted is False:
            why = "switched off"
        used[name] = why is None
        record[name] = {"used": True} if why is None else {"used": False, "why": why}
    layouts = Layouts(prefix_sharing=used["prefix_sharing"], padding_free=used["padding_free"],
                      share_vision=used["shared_image_encoding"], pairs=variant.shared_pairs)
    return layouts, record


def _why_not(name: str, cfg, family: str, variant, model) -> str | None:
    """Why `name` cannot apply to this run, or None when it can."""
    fam = get_family(family)
    if name == "shared_image_encoding":
        if fam.vision_encoder is None:
            return f"family {family} has no separately callable image encoder"
        trainable = _trainable_vision(model, family)
        if trainable:
            return f"{trainable} trains, so the policy's image features differ from the reference's"
        if cfg.ref_model and cfg.ref_model != cfg.model:
            return "the reference model is another checkpoint, whose image encoder may differ from the policy's"
        return None
    if not fam.shared_layouts:
        supported = ", ".join(f.name for f in FAMILIES.values() if f.shared_layouts)
        return f"family {family} does not take shared layouts (supported: {supported})"
    attention = model.config.get_text_config()._attn_implementation
    if attention not in PACKED_ATTENTION:
        return (f"{attention} attention does not take the 4-D masks of shared layouts (sdpa, eager and "
                "flex_attention do)")
    if name == "prefix_sharing" and variant.shared_pairs is None:
        return f"variant {variant.name}'s rows do not share a prompt and image"
    return None


def _trainable_vision(model, family: str) -> str | None:
    """The name of a trainable parameter in the family's vision encoder, or None."""
    from peft import PeftModel

    from align.models.layout_forward import vision_encoder

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    module = vision_encoder(base, family)
    path = get_family(family).vision_encoder
    return next((f"{path}.{n}" for n, p in module.named_parameters() if p.requires_grad), None)
