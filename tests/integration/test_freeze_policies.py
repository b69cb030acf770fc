"""Trainable-part policies on the tiny checkpoints of every family: exactly the named parameters train, training
moves them and nothing else, LoRA and LLaMA-Adapter wrap the right modules, and what trained is saved."""

from __future__ import annotations

import copy
import re

import pytest

from align.models.freeze import applicable_atoms
from align.models.tiny import TINY_BUILDERS

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

LLAVA_LIKE = ("llava", "llava_next", "llava_next_video")
LLM = {
    **{f: ("model.language_model", "lm_head") for f in (*LLAVA_LIKE, "qwen2_vl", "qwen2_5_vl", "fuyu")},
    "idefics": ("model.embed_tokens", "model.layers", "model.norm", "lm_head"),
    "chameleon": ("model.embed_tokens", "model.layers", "model.norm", "lm_head"),
    "blip2": ("language_model",),  # the OPT head is tied to the input embeddings
    "instructblip": ("language_model",),
    "kosmos2": ("text_model",),  # head tied as well
}
# What each atom trains fully, written out from the tiny models' parameter names (2-layer towers: layer 1 is last).
FULL = {
    "projector": {
        "llava": ("model.multi_modal_projector",),
        "llava_next": ("model.multi_modal_projector", "model.image_newline"),
        "llava_next_video": ("model.multi_modal_projector", "model.image_newline"),
        "qwen2_vl": ("model.visual.merger",),
        "qwen2_5_vl": ("model.visual.merger",),
        "blip2": ("language_projection",),
        "instructblip": ("language_projection",),
        "fuyu": ("model.vision_embed_tokens",),
        "kosmos2": ("image_to_text_projection",),
    },
    "vision": {
        **{f: ("model.vision_tower",) for f in LLAVA_LIKE},
        "qwen2_vl": ("model.visual.patch_embed", "model.visual.blocks"),
        "qwen2_5_vl": ("model.visual.patch_embed", "model.visual.blocks"),
        "idefics": ("model.vision_model",),
        "blip2": ("vision_model",),
        "instructblip": ("vision_model",),
        "kosmos2": ("vision_model",),
    },
    "vision-last": {
        **{f: ("model.vision_tower.encoder.layers.1",) for f in LLAVA_LIKE},
        "qwen2_vl": ("model.visual.blocks.1",),
        "qwen2_5_vl": ("model.visual.blocks.1",),
        "idefics": ("model.vision_model.encoder.layers.1",),
        "blip2": ("vision_model.encoder.layers.1", "vision_model.post_layernorm"),
        "instructblip": ("vision_model.encoder.layers.1", "vision_model.post_layernorm"),
        "kosmos2": ("vision_model.model.encoder.layers.1", "vision_model.model.post_layernorm"),
    },
    "qformer": {f: ("qformer", "query_tokens", "language_projection") for f in ("blip2", "instructblip")},
    "resampler": {"idefics": ("model.perceiver_resampler",)},
    "xattn": {"idefics": ("model.gated_cross_attn_layers",)},
    "llm": LLM,
    "all": {f: ("",) for f in TINY_BUILDERS},
}
# Trainable parameters the loss never reaches, and why.
NO_GRADIENT = {
    # LLaVA and IDEFICS read CLIP's hidden states before its final norm.
    **{f: r"model\.vision_tower\.post_layernorm\." for f in LLAVA_LIKE},
    "idefics": r"model\.vision_model\.post_layernorm\.",
    "chameleon": r"model\.vqmodel\.",  # images become discrete token ids
}
COMBINATIONS = ("projector+llm", "vision-last+llm", "resampler+xattn", "lora+projector", "lora+qformer",
                "lora+resampler+xattn", "lora+vision", "lora+vision-last", "adapter+projector")


def _cases():
    for family in sorted(TINY_BUILDERS):
        atoms = set(applicable_atoms(family)) - {"qlora"}  # qlora needs CUDA: see its own test
        combos = [c for c in COMBINATIONS if set(c.split("+")) <= atoms]
        yield from ((family, policy) for policy in sorted(atoms) + combos)


# ---------------------------------------------------------------------------------------------------- helpers


def _load(tiny_checkpoint, family):
    from align.models.load import load_model_and_processor

    return load_model_and_processor(tiny_checkpoint(family), dtype="float32")


def _batch(processor, family):
    """Batch 2 with images and assistant answers; labels on every non-pad token."""
    from PIL import Image

    from align.models.inputs import encode

    conversations = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Is there a {c} circle?"}]},
         {"role": "assistant", "content": [{"type": "text", "text": f"Yes, there is a {c} circle."}]}]
        for c in ("red", "blue")
    ]
    images = [[Image.new("RGB", (40, 30), c)] for c in ("red", "blue")]
    batch = dict(encode(processor, family, conversations, images, add_generation_prompt=False))
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    batch["labels"] = labels
    return batch


def _train(model, batch, steps=2):
    """AdamW steps at lr 1e-2 -> (parameters before, peak |grad| per parameter name).

    No weight decay: it would move every trainable tensor whatever its gradient. Two steps, because zero-init
    parts (LoRA's B, the adapter's gates) pass no gradient to their partners (LoRA's A, the prompts) until the
    first step has opened them."""
    model.train()
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.AdamW([p for p in params.values() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    peak: dict[str, float] = {}
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                peak[n] = max(peak.get(n, 0.0), p.grad.abs().max().item())
        optimizer.step()
    return before, peak


def _plain(name):
    """A trainable's name in the unwrapped base model: PEFT's prefix and modules_to_save copy taken out."""
    from align.models.families import unwrapped_name

    return unwrapped_name(name).replace(".modules_to_save.default", "")


def _injected(name):
    return any(tag in name for tag in (".lora_", ".adaption_"))


def _under(name, prefix):
    return not prefix or name == prefix or name.startswith(prefix + ".")


def _expected_full(family, policy, base_names):
    prefixes = [p for atom in policy.split("+") for p in FULL.get(atom, {}).get(family, ())]
    return {n for n in base_names if any(_under(n, p) for p in prefixes)}


def _assert_step_moves_exactly_the_trainables(model, family, before, peak):
    no_gradient = re.compile(NO_GRADIENT.get(family, r"$^"))
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert torch.equal(param, before[name]), f"frozen {name} changed"
        elif name not in peak:
            assert no_gradient.match(_plain(name)), f"trainable {name} got no gradient"
        # Smaller gradients are numerically zero: attention key biases (softmax ignores a shift shared by all keys)
        # and the tiny random InstructBLIP tower, whose gradients vanish; AdamW's eps swallows them.
        elif peak[name] > 1e-6:
            assert not torch.equal(param, before[name]), f"trainable {name} did not change"


# ---------------------------------------------------------------------------------------------------- every policy


@pytest.mark.parametrize("family, policy", list(_cases()))
def test_policy_trains_exactly_its_parameters(family, policy, tiny_checkpoint):
    from align.models.families import get_family, part_of
    from align.models.freeze import apply_train_policy

    model, processor = _load(tiny_checkpoint, family)
    base_names = [n for n, _ in model.named_parameters()]
    model = apply_train_policy(model, family, policy)
    spec = get_family(family)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    full = {_plain(n) for n in trainable if not _injected(n)}
    expected = _expected_full(family, policy, base_names)
    if "adapter" in policy:  # LLaMA-Adapter V2 trains the decoder's norms
        expected |= {n for n in base_names if part_of(n, spec) == "language_model" and "norm" in n}
    assert full == expected, (sorted(full ^ expected)[:6])
    injected = [n for n in trainable if _injected(n)]
    assert bool(injected) == ("lora" in policy or "adapter" in policy)
    assert all(part_of(_plain(n), spec) == "language_model" for n in injected), injected[:3]

    before, peak = _train(model, _batch(processor, family))
    _assert_step_moves_exactly_the_trainables(model, family, before, peak)


def test_inapplicable_policy_fails_before_touching_the_model(tiny_checkpoint):
    from align.errors import ConfigError
    from align.models.freeze import apply_train_policy

    model, _ = _load(tiny_checkpoint, "llava")
    with pytest.raises(ConfigError, match="'qformer' does not apply to llava"):
        apply_train_policy(model, "llava", "qformer")
    assert all(p.requires_grad for p in model.parameters())


def test_group_prefixes_name_real_parameters_of_the_right_part(tiny_checkpoint):
    from align.models.families import get_family, part_of

    home = {"projector": "connector", "qformer": "connector", "resampler": "connector", "vision_layers": "vision",
            "vision_post_norm": "vision"}
    for family in sorted(TINY_BUILDERS):
        model, _ = _load(tiny_checkpoint, family)
        spec = get_family(family)
        names = [n for n, _ in model.named_parameters()]
        for group, prefixes in spec.groups.items():
            for prefix in prefixes:
                matched = [n for n in names if _under(n, prefix)]
                assert matched, f"{family}: group {group} prefix {prefix} matches no parameter"
                assert {part_of(n, spec) for n in matched} == {home[group]}, (family, group, prefix)


def test_vision_last_follows_the_layer_llava_reads(tiny_checkpoint):
    """LLaVA-1.5 reads the penultimate CLIP layer (vision_feature_layer -2): that layer is the last that matters."""
    from align.models.freeze import apply_train_policy

    model, _ = _load(tiny_checkpoint, "llava")
    model.config.vision_feature_layer = -2
    model = apply_train_policy(model, "llava", "vision-last")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.vision_tower.encoder.layers.0.") for n in trainable)


# ---------------------------------------------------------------------------------------------------- counts, table


def _trainable_count(model, family, part):
    from align.models.families import count_parameters_by_part, get_family

    return count_parameters_by_part(model, get_family(family))[part]["trainable"]


def test_hand_worked_counts(tiny_checkpoint):
    """Tiny sizes: hidden 64, MLP 128, 2 layers, LoRA r 16, adapter prompt 10.

    llava projector:  linear_1 + linear_2 = 2 x (64*64 + 64)                                   =  8,320
    blip2 projector:  one linear layer (MiniGPT-4's) = 64*64 + 64                              =  4,160
    llava lora:       per layer q,k,v,o 4 x 16*(64+64) + gate,up 2 x 16*(64+128) + down 16*(128+64)
                      = 8,192 + 6,144 + 3,072 = 17,408; x 2 layers                            = 34,816
    llava adapter:    prompts + gates 2 x (10*64 + 1) = 1,282; bias + scale on 7 linears per layer
                      2 x 2 x (4*64 + 2*128 + 64) = 2,304; norms 2 x 2 x 64 + 64 = 320        =  3,906
    """
    from align.models.freeze import apply_train_policy

    cases = [("llava", "projector", "connector", 8_320), ("blip2", "projector", "connector", 4_160),
             ("llava", "lora", "language_model", 34_816), ("llava", "adapter", "language_model", 3_906)]
    for family, policy, part, count in cases:
        model, _ = _load(tiny_checkpoint, family)
        model = apply_train_policy(model, family, policy)
        assert _trainable_count(model, family, part) == count, (family, policy)


def test_table_counts_peft_weights_under_their_part_and_tied_weights_once(tiny_checkpoint):
    from rich.console import Console

    from align.models.families import count_parameters_by_part, get_family
    from align.models.freeze import apply_train_policy, trainable_parts_table

    model, _ = _load(tiny_checkpoint, "llava")
    model = apply_train_policy(model, "llava", "lora+projector")
    console = Console(record=True, width=120)
    console.print(trainable_parts_table(model, "llava"))
    text = console.export_text()
    assert "other" not in text
    rows = {cells[0]: cells[1:] for line in text.splitlines() if len(cells := line.replace("│", " ").split()) == 4}
    assert rows["connector"] == ["16,640", "8,320", "8,320"]  # modules_to_save: the frozen original and its copy
    assert rows["language_model"][1] == "34,816"  # LoRA weights count under the part they attach to
    assert rows["vision"][1] == rows["lm_head"][1] == "0"

    blip, _ = _load(tiny_checkpoint, "blip2")
    counts = count_parameters_by_part(apply_train_policy(blip, "blip2", "llm"), get_family("blip2"))
    unique = sum(p.numel() for p in blip.language_model.parameters())  # the tied head once
    assert counts["language_model"] == {"total": unique, "trainable": unique}


# ---------------------------------------------------------------------------------------------------- LoRA


@pytest.mark.parametrize("family", sorted(TINY_BUILDERS))
def test_lora_wraps_the_language_models_linears_only(family, tiny_checkpoint):
    from peft.tuners.lora import LoraLayer
    from torch import nn

    from align.models.families import get_family, part_of
    from align.models.freeze import apply_train_policy

    model, processor = _load(tiny_checkpoint, family)
    spec = get_family(family)
    output = model.get_output_embeddings()
    linears = {n for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and m is not output and part_of(n, spec) == "language_model"}
    head_before = output.weight.detach().clone()
    model = apply_train_policy(model, family, "lora")
    wrapped = {_plain(n) for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert wrapped == linears  # all-linear: every decoder linear, no vision, no connector, no head
    assert not isinstance(model.get_output_embeddings(), LoraLayer)

    before, peak = _train(model, _batch(processor, family))
    _assert_step_moves_exactly_the_trainables(model, family, before, peak)
    for name, param in model.named_parameters():
        if ".base_layer." in name:
            assert not param.requires_grad and torch.equal(param, before[name])
    assert torch.equal(model.get_output_embeddings().weight, head_before)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "blip2"])
def test_lora_reaches_the_vision_tower_only_when_asked(family, tiny_checkpoint):
    from peft.tuners.lora import LoraLayer

    from align.models.families import get_family, part_of
    from align.models.freeze import LoraSettings, apply_train_policy

    model, _ = _load(tiny_checkpoint, family)
    model = apply_train_policy(model, family, "lora", lora=LoraSettings(include_vision=True))
    parts = {part_of(_plain(n), get_family(family)) for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert parts == {"language_model", "vision"}  # never the connector (Qwen's merger sits inside model.visual)


def test_lora_targets_by_suffix_or_regex(tiny_checkpoint):
    from peft.tuners.lora import LoraLayer

    from align.errors import ConfigError
    from align.models.freeze import LoraSettings, apply_train_policy

    def wrapped(target):
        model, _ = _load(tiny_checkpoint, "llava")
        model = apply_train_policy(model, "llava", "lora", lora=LoraSettings(target=target))
        return sorted(_plain(n) for n, m in model.named_modules() if isinstance(m, LoraLayer))

    assert [n.rsplit(".", 2)[-2:] for n in wrapped(["q_proj", "v_proj"])] == [["self_attn", "q_proj"],
                                                                            ["self_attn", "v_proj"]] * 2
    assert wrapped(r".*layers\.1\.mlp\.down_proj") == ["model.language_model.layers.1.mlp.down_proj"]
    assert wrapped("q_proj,v_proj") == wrapped(["q_proj", "v_proj"])  # as a flag would give it
    with pytest.raises(ConfigError, match="matches no linear layer.*q_proj"):
        wrapped(["fc1"])  # CLIP's, not the decoder's


def test_qlora_quantizes_the_decoder_only():
    """Checked with transformers' own matcher for llm_int8_skip_modules (bitsandbytes itself needs a GPU)."""
    from transformers.quantizers.quantizers_utils import should_convert_module

    from align.models.freeze import qlora_quantization_config

    config = qlora_quantization_config("llava_next")
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    skip = config.llm_int8_skip_modules
    assert should_convert_module("model.language_model.layers.0.mlp.up_proj", skip)
    for kept in ("model.vision_tower.encoder.layers.0.mlp.fc1", "model.multi_modal_projector.linear_1", "lm_head"):
        assert not should_convert_module(kept, skip), kept
    assert not should_convert_module("language_model.lm_head", qlora_quantization_config("blip2").llm_int8_skip_modules)


@pytest.mark.parametrize("family", ["llava", "llava_next"])
def test_lora_projector_saves_the_projector(family, tiny_checkpoint, tmp_path):
    """LLaVA's LoRA recipe: the saved adapter holds the trained projector; LLaVA-NeXT's bare image_newline, which
    PEFT's modules_to_save cannot hold, goes beside it; loading both gives back the trained model."""
    from safetensors.torch import load_file

    from align.models.freeze import EXTRA_WEIGHTS, apply_train_policy, load_trained, save_trained

    model, processor = _load(tiny_checkpoint, family)
    model = apply_train_policy(model, family, "lora+projector")
    batch = _batch(processor, family)
    _train(model, batch)
    save_trained(model, tmp_path)
    adapter = load_file(tmp_path / "adapter_model.safetensors")
    projector = model.get_base_model().model.multi_modal_projector.modules_to_save["default"]
    for name, param in projector.named_parameters():
        assert torch.equal(adapter[f"base_model.model.model.multi_modal_projector.{name}"], param)
    extra = tmp_path / EXTRA_WEIGHTS
    if family == "llava_next":
        assert torch.equal(load_file(extra)["model.image_newline"], model.get_base_model().model.image_newline)
    else:
        assert not extra.exists()

    fresh, _ = _load(tiny_checkpoint, family)
    restored = load_trained(fresh, family, "lora+projector", tmp_path)
    model.eval()
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored(**batch).logits, model(**batch).logits)


def test_lora_projector_adapter_loads_with_plain_peft(tiny_checkpoint, tmp_path):
    from peft import PeftModel

    from align.models.freeze import apply_train_policy

    model, processor = _load(tiny_checkpoint, "llava")
    model = apply_train_policy(model, "llava", "lora+projector")
    batch = _batch(processor, "llava")
    _train(model, batch)
    model.save_pretrained(tmp_path)
    fresh, _ = _load(tiny_checkpoint, "llava")
    restored = PeftModel.from_pretrained(fresh, tmp_path)
    model.eval()
    with torch.no_grad():
        assert torch.equal(restored(**batch).logits, model(**batch).logits)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU message; GPUs run qlora itself")
def test_qlora_on_a_cpu_says_what_it_needs_in_one_line(tiny_checkpoint):
    from align.errors import ConfigError
    from align.models.freeze import apply_train_policy

    model, _ = _load(tiny_checkpoint, "llava")
    with pytest.raises(ConfigError) as err:
        apply_train_policy(model, "llava", "qlora+projector")
    message = str(err.value)
    assert "\n" not in message and "CUDA" in message and "bitsandbytes" in message and "lora" in message


def test_a_wrapped_model_is_refused(tiny_checkpoint):
    from align.errors import ConfigError
    from align.models.freeze import apply_train_policy

    model, _ = _load(tiny_checkpoint, "llava")
    model = apply_train_policy(model, "llava", "lora")
    with pytest.raises(ConfigError, match="already PEFT-wrapped"):
        apply_train_policy(model, "llava", "lora")


# ---------------------------------------------------------------------------------------------------- adapter

ADAPTER_FAMILIES = ("llava", "llava_next", "llava_next_video", "idefics")


def _gates_and_prompts(model):
    params = dict(model.named_parameters())
    return ({n: p for n, p in params.items() if n.endswith("adaption_gate")},
            {n: p for n, p in params.items() if n.endswith("adaption_prompt")})


@pytest.mark.parametrize("family", ADAPTER_FAMILIES)
def test_adapter_starts_as_the_base_model_and_opens_its_gates(family, tiny_checkpoint):
    """Zero-init attention: with every gate at 0 (and V2's bias 0, scale 1) the adapted model computes exactly
    the base model's logits. The first step moves the gates but not the prompts (a closed gate passes no
    gradient); after it the outputs differ, and the second step moves the prompts."""
    from align.models.freeze import apply_train_policy

    model, processor = _load(tiny_checkpoint, family)
    batch = _batch(processor, family)
    base = copy.deepcopy(model).eval()
    model = apply_train_policy(model, family, "adapter").eval()
    gates, prompts = _gates_and_prompts(model)
    assert len(gates) == len(prompts) == 2  # both decoder layers (30 capped at the depth)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in gates.values())
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, base(**batch).logits)

    before, peak = _train(model, batch, steps=1)
    assert all(not torch.equal(g, before[n]) for n, g in gates.items())
    assert all(peak[n] == 0.0 and torch.equal(p, before[n]) for n, p in prompts.items())
    model.eval()
    with torch.no_grad():
        assert not torch.equal(model(**batch).logits, base(**batch).logits)
    _train(model, batch, steps=1)
    assert all(not torch.equal(p, before[n]) for n, p in prompts.items())


@pytest.mark.parametrize("family, rotary", [("llava", "transformers.models.llama.modeling_llama"),
                                            ("idefics", "transformers.models.idefics.modeling_idefics")])
def test_adapter_queries_match_the_decoders_own(family, rotary, tiny_checkpoint, monkeypatch):
    """PEFT recomputes each wrapped attention's rotated queries to score the prompts; they must be the ones the
    decoder itself computed, or the prompts attend with the wrong positions."""
    import importlib

    from peft.tuners.adaption_prompt.config import TRANSFORMERS_MODEL_CONFIG
    from peft.tuners.adaption_prompt.layer import AdaptedAttention

    from align.models.freeze import apply_train_policy

    model, processor = _load(tiny_checkpoint, family)
    model = apply_train_policy(model, family, "adapter").eval()
    module = importlib.import_module(rotary)
    own, recomputed = [], []

    def spy(q, k, *args, **kwargs):
        out = original(q, k, *args, **kwargs)
        own.append(out[0])
        return out

    def recompute(attention, args, kwargs):
        compute = TRANSFORMERS_MODEL_CONFIG["llama"].compute_query_states
        recomputed.append(compute(model=attention.model, **kwargs))

    original = module.apply_rotary_pos_emb
    monkeypatch.setattr(module, "apply_rotary_pos_emb", spy)
    for attention in (m for m in model.modules() if isinstance(m, AdaptedAttention)):
        attention.register_forward_pre_hook(recompute, with_kwargs=True)
    with torch.no_grad():
        model(**_batch(processor, family))
    assert len(own) == len(recomputed) == 2
    for mine, theirs in zip(own, recomputed, strict=True):
        assert torch.equal(mine, theirs)


def test_adapter_settings_choose_layers_and_v2(tiny_checkpoint):
    from peft.tuners.adaption_prompt.layer import AdaptedAttention

    from align.models.freeze import AdapterSettings, apply_train_policy

    model, _ = _load(tiny_checkpoint, "llava")
    model = apply_train_policy(model, "llava", "adapter", adapter=AdapterSettings(prompt_length=4, layers=1, v2=False))
    adapted = [n for n, m in model.named_modules() if isinstance(m, AdaptedAttention)]
    assert [_plain(n) for n in adapted] == ["model.language_model.layers.1.self_attn"]  # the top layer
    trainable = {_plain(n): p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"model.language_model.layers.1.self_attn.adaption_prompt": 4 * 64,
                         "model.language_model.layers.1.self_attn.adaption_gate": 1}


def test_adapter_refuses_checkpoints_whose_decoder_peft_cannot_adapt(tiny_checkpoint):
    """The family allows `adapter`, the checkpoint does not: a LLaVA on a Qwen2 decoder; a decoder whose
    attention normalises its queries (as Chameleon's does), which PEFT's recomputed queries would skip."""
    from torch import nn
    from transformers import AutoConfig, LlavaForConditionalGeneration, Qwen2Config

    from align.errors import ConfigError
    from align.models.freeze import apply_train_policy

    llava = AutoConfig.from_pretrained(tiny_checkpoint("llava"))
    text = llava.text_config
    llava.text_config = Qwen2Config(vocab_size=text.vocab_size, hidden_size=64, intermediate_size=128,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
    with pytest.raises(ConfigError, match="its decoder is qwen2.*Llama-style decoders only"):
        apply_train_policy(LlavaForConditionalGeneration(llava), "llava", "adapter")

    model, _ = _load(tiny_checkpoint, "llava")
    model.model.language_model.layers[0].self_attn.add_module("q_norm", nn.LayerNorm(16))
    with pytest.raises(ConfigError, match="normalises queries \\(q_norm\\)"):
        apply_train_policy(model, "llava", "adapter")


def test_load_trained_refuses_a_whole_checkpoint_policy(tiny_checkpoint, tmp_path):
    from align.errors import ConfigError
    from align.models.freeze import load_trained

    model, _ = _load(tiny_checkpoint, "llava")
    with pytest.raises(ConfigError, match="whole checkpoint"):
        load_trained(model, "llava", "projector+llm", tmp_path)


def test_adapter_round_trips_through_save_trained(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file

    from align.models.freeze import EXTRA_WEIGHTS, apply_train_policy, load_trained, save_trained

    model, processor = _load(tiny_checkpoint, "llava")
    model = apply_train_policy(model, "llava", "adapter+projector")
    batch = _batch(processor, "llava")
    _train(model, batch)
    save_trained(model, tmp_path)
    adapter = load_file(tmp_path / "adapter_model.safetensors")
    assert any(k.endswith("adaption_scale") for k in adapter) and any(k.endswith("adaption_gate") for k in adapter)
    extra = load_file(tmp_path / EXTRA_WEIGHTS)  # what PEFT's adaption-prompt file does not hold
    assert "model.language_model.norm.weight" in extra and "model.multi_modal_projector.linear_1.weight" in extra

    fresh, _ = _load(tiny_checkpoint, "llava")
    restored = load_trained(fresh, "llava", "adapter+projector", tmp_path)
    model.eval()
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored(**batch).logits, model(**batch).logits)
