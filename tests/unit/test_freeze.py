"""resolve_policy: which policy atoms apply to which family (and why not), what each trains, which combinations
contradict each other. Pure: no model is built."""

from __future__ import annotations

import pytest

from align.errors import AlignError, ConfigError
from align.models.families import FAMILIES, GROUP_NAMES
from align.models.freeze import (
    POLICIES,
    AdapterSettings,
    LoraSettings,
    applicable_atoms,
    resolve_policy,
)

_LLAVA_LIKE = ("llava", "llava_next", "llava_next_video")
_QWEN = ("qwen2_vl", "qwen2_5_vl")
_BLIP = ("blip2", "instructblip")
_EVERYWHERE = {"llm", "lora", "qlora", "all"}
# The policy x family matrix: which atoms apply (every other atom is an error naming why).
APPLIES = {
    **{f: _EVERYWHERE | {"projector", "vision", "vision-last", "adapter"} for f in _LLAVA_LIKE},
    **{f: _EVERYWHERE | {"projector", "vision", "vision-last"} for f in _QWEN},
    "idefics": _EVERYWHERE | {"vision", "vision-last", "resampler", "xattn", "adapter"},
    **{f: _EVERYWHERE | {"projector", "vision", "vision-last", "qformer"} for f in _BLIP},
    "chameleon": set(_EVERYWHERE),
    "fuyu": _EVERYWHERE | {"projector"},
    "kosmos2": _EVERYWHERE | {"projector", "vision", "vision-last"},
}
# Why an atom does not apply, in words the error must carry.
WHY = {
    ("llava", "qformer"): "has no Q-Former",
    ("llava", "resampler"): "has no perceiver resampler",
    ("qwen2_vl", "xattn"): "has no gated cross-attention layers",
    ("qwen2_vl", "adapter"): "M-RoPE",
    ("chameleon", "projector"): "VQ-VAE",
    ("chameleon", "vision"): "no gradient reaches it",
    ("chameleon", "adapter"): "q_norm",
    ("fuyu", "vision"): "no vision encoder",
    ("fuyu", "vision-last"): "no vision encoder",
    ("idefics", "projector"): "perceiver resampler",
    ("blip2", "adapter"): "OPT",
    ("kosmos2", "adapter"): "no rotary",
}


def test_the_matrix_covers_every_family_and_atom():
    assert set(APPLIES) == set(FAMILIES)
    for family, atoms in APPLIES.items():
        assert set(applicable_atoms(family)) == atoms, family


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_atom_applies_or_errors_in_one_line(family):
    for atom in POLICIES:
        if atom in APPLIES[family]:
            assert resolve_policy(atom, family).atoms == (atom,)
            continue
        with pytest.raises(ConfigError) as err:
            resolve_policy(atom, family)
        message = str(err.value)
        assert "\n" not in message
        assert f"'{atom}'" in message and family in message
        assert "policies that apply to" in message
        assert ", ".join(sorted(APPLIES[family])) in message
        if (family, atom) in WHY:
            assert WHY[(family, atom)] in message, message


def test_unknown_atoms_list_the_known_ones():
    with pytest.raises(ConfigError) as err:
        resolve_policy("lora+projecter", "llava")
    message = str(err.value)
    assert "unknown train policy 'projecter'" in message
    assert all(atom in message for atom in POLICIES)


@pytest.mark.parametrize("policy", ["", "lora++projector", "+llm", "llm+"])
def test_empty_atoms_are_errors(policy):
    with pytest.raises(ConfigError, match="empty atom"):
        resolve_policy(policy, "llava")


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(AlignError, match="unknown family 'llama'.*llava"):
        resolve_policy("llm", "llama")


@pytest.mark.parametrize("policy, says", [
    ("all+llm", "'all' already trains every parameter"),
    ("lora+adapter", "cannot be combined"),
    ("lora+qlora", "qlora already is lora"),
    ("lora+llm", "choose one"),
    ("adapter+llm", "choose one"),
])
def test_contradictions_are_errors(policy, says):
    with pytest.raises(ConfigError, match=says):
        resolve_policy(policy, "llava")


def test_projector_llava_stage_1_and_2():
    stage1 = resolve_policy("projector", "llava")
    assert stage1.prefixes == ("model.multi_modal_projector",) and stage1.parts == () and stage1.peft is None
    stage2 = resolve_policy("projector+llm", "llava")
    assert stage2.parts == ("language_model", "lm_head")
    assert stage2.trains("model.multi_modal_projector.linear_1.weight")
    assert stage2.trains("model.language_model.layers.0.mlp.up_proj.weight") and stage2.trains("lm_head.weight")
    assert not stage2.trains("model.vision_tower.encoder.layers.0.mlp.fc1.weight")


def test_llava_next_projector_carries_the_image_newline():
    assert resolve_policy("projector", "llava_next").prefixes == ("model.multi_modal_projector", "model.image_newline")


def test_blip2_projector_is_minigpt4s_single_linear_layer_and_qformer_is_blip2s():
    projector = resolve_policy("projector", "blip2")
    assert projector.prefixes == ("language_projection",)
    assert not projector.trains("qformer.encoder.layer.0.attention.attention.query.weight")
    assert not projector.trains("query_tokens")
    qformer = resolve_policy("qformer", "blip2")
    assert set(qformer.prefixes) == {"qformer", "query_tokens", "language_projection"}
    assert not qformer.trains("vision_model.post_layernorm.weight")


def test_qwen_vision_leaves_the_merger_to_projector():
    vision = resolve_policy("vision", "qwen2_vl")
    assert vision.trains("model.visual.blocks.0.attn.qkv.weight")
    assert not vision.trains("model.visual.merger.mlp.0.weight")  # longest prefix: the merger is the connector
    assert resolve_policy("projector", "qwen2_vl").trains("model.visual.merger.mlp.0.weight")


def test_flamingo_and_kosmos_recipes():
    flamingo = resolve_policy("resampler+xattn", "idefics")
    assert flamingo.prefixes == ("model.perceiver_resampler",) and flamingo.parts == ("xattn",)
    assert flamingo.trains("model.gated_cross_attn_layers.0.alpha_dense")
    assert not flamingo.trains("model.layers.0.self_attn.q_proj.weight")
    kosmos = resolve_policy("vision-last+llm", "kosmos2")
    assert kosmos.last_layer_of == ("vision_model.model.encoder.layers",)
    assert kosmos.prefixes == ("vision_model.model.post_layernorm",)  # the norm after the last layer is read
    assert resolve_policy("vision-last", "llava").prefixes == ()  # LLaVA reads features before CLIP's last norm


def test_peft_atoms():
    lora = resolve_policy("lora+projector", "llava")
    assert lora.lora and not lora.qlora and lora.peft == "lora" and lora.prefixes == ("model.multi_modal_projector",)
    qlora = resolve_policy("qlora", "qwen2_vl")
    assert qlora.lora and qlora.qlora and qlora.peft == "lora"
    adapter = resolve_policy("adapter", "idefics")
    assert adapter.adapter and adapter.peft == "adaption_prompt" and adapter.parts == adapter.prefixes == ()


def test_all_trains_everything_and_repeats_collapse():
    assert resolve_policy("all", "chameleon").trains("model.vqmodel.quantize.embedding.weight")
    assert resolve_policy("projector+llm+projector", "llava").policy == "projector+llm"


def test_family_tables_use_known_names():
    for spec in FAMILIES.values():
        assert set(spec.groups) <= set(GROUP_NAMES), spec.name
        assert set(spec.not_applicable) <= set(POLICIES), spec.name
        assert all("\n" not in why for why in spec.not_applicable.values())


def test_policy_descriptions_are_one_line():
    assert all(text and "\n" not in text for text in POLICIES.values())


@pytest.mark.parametrize("kwargs", [{"r": 0}, {"dropout": 1.0}, {"bias": "some"}])
def test_bad_lora_settings(kwargs):
    with pytest.raises(ConfigError, match="lora"):
        LoraSettings(**kwargs)


def test_adapter_defaults_follow_llama_adapter():
    settings = AdapterSettings()
    assert (settings.prompt_length, settings.layers, settings.v2) == (10, 30, True)
    with pytest.raises(ConfigError, match="adapter"):
        AdapterSettings(layers=0)
