"""Trainable-part policies (`align sft --train POLICY`): which parameters of a VLM train, named after the seed
architectures that trained them and resolved per family through `align.models.families`.

A policy is one atom or several joined with `+` ("projector+llm", "lora+projector", "resampler+xattn"). Atoms
that name parts train those parameters fully; `lora`, `qlora` and `adapter` wrap the model with PEFT. Everything
a policy does not name is frozen (requires_grad False).

Saving: a PEFT-wrapped model's `save_pretrained` writes the adapter. Fully trained modules under `lora`/`qlora` go
through PEFT's modules_to_save, so they are in that file; what PEFT cannot hold (a bare parameter such as
LLaVA-NeXT's image_newline or BLIP-2's query tokens, and the norms `adapter` trains) is in `extra_state_dict`,
and `save_trained` / `load_trained` write and restore both.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from align.errors import ConfigError
from align.models.families import FAMILIES, Family, get_family, part_of

POLICIES: dict[str, str] = {
    "projector": "the projector only (FROMAGe, LLaVA stage 1, MiniGPT-4's one linear layer; BLIP-2: the language "
                 "projection)",
    "llm": "the language model and its output head",
    "vision": "the vision encoder (Frozen)",
    "vision-last": "the last vision layer the connector reads (Kosmos), with the final vision norm where it is read",
    "qformer": "BLIP-2's Q-Former, its query tokens and the language projection (BLIP-2, InstructBLIP)",
    "resampler": "IDEFICS' perceiver resampler (Flamingo)",
    "xattn": "the gated cross-attention layers in the language model (Flamingo, IDEFICS)",
    "adapter": "LLaMA-Adapter: zero-init gated adaption prompts in the top layers (PEFT), V2's trainable norms and "
               "bias/scale on the language model's linear layers",
    "lora": "LoRA on the language model's linear layers (PEFT; lm_head excluded, vision tower only when asked)",
    "qlora": "lora on a 4-bit quantized model (needs CUDA and bitsandbytes)",
    "all": "every parameter",
}

_PEFT_ATOMS = ("lora", "qlora", "adapter")
_WHAT = {  # atom -> what a family must have for it, for "has no ..." errors
    "projector": ("group", "projector", "projector"),
    "qformer": ("group", "qformer", "Q-Former"),
    "resampler": ("group", "resampler", "perceiver resampler"),
    "vision-last": ("group", "vision_layers", "vision encoder layers"),
    "vision": ("part", "vision", "vision encoder"),
    "xattn": ("part", "xattn", "gated cross-attention layers"),
}
# PEFT's adaption prompt only fits Llama-style attention (see families.py); gpt2 is in PEFT's table too, but PEFT
# picks its GPT-2 module by the outer config's model_type, which for a VLM is never "gpt2".
_ADAPTER_DECODERS = ("llama", "mistral")
EXTRA_WEIGHTS = "align_trainables.safetensors"  # trainables a PEFT adapter file cannot hold, beside it


@dataclass
class LoraSettings:
    r"""LoRA on the language model. `target`: "all-linear" (every nn.Linear of the language model except the output
    head), module-name suffixes (a list, or names joined by commas: "q_proj,v_proj"), or a regular expression that
    must match a module's full name (r".*layers\.1[0-9]\..*proj")."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target: str | list[str] = "all-linear"
    include_vision: bool = False  # also the vision encoder's linear layers
    bias: str = "none"  # PEFT's meaning: "none", "all" (every bias in the model trains), "lora_only"

    def __post_init__(self):
        problems = []
        if self.r <= 0 or self.alpha <= 0:
            problems.append(f"lora r and alpha must be positive (got r={self.r}, alpha={self.alpha})")
        if not 0 <= self.dropout < 1:
            problems.append(f"lora dropout must be in [0, 1) (got {self.dropout})")
        if self.bias not in ("none", "all", "lora_only"):
            problems.append(f"lora bias must be none, all or lora_only (got '{self.bias}')")
        if problems:
            raise ConfigError(problems)


@dataclass
class AdapterSettings:
    """LLaMA-Adapter: `prompt_length` learned prompt tokens in each of the top `layers` decoder layers (the paper's
    7B setting: 10 tokens, top 30 of 32 layers; capped at the model's depth, so tiny models use all of theirs).
    `v2` adds LLaMA-Adapter V2's trainable norms and a zero-init bias and unit scale on every linear layer."""

    prompt_length: int = 10
    layers: int = 30
    v2: bool = True

    def __post_init__(self):
        if self.prompt_length <= 0 or self.layers <= 0:
            raise ConfigError(f"adapter prompt_length and layers must be positive (got {self.prompt_length}, "
                              f"{self.layers})")


@dataclass(frozen=True)
class ResolvedPolicy:
    """What a policy trains in one family; pure (no model). Fully trained parameters are those in `parts` (by
    the families' longest-prefix rule) or under `prefixes`, plus the last layer the connector reads of each layer
    list in `last_layer_of` (found on the model: it depends on the config)."""

    policy: str
    family: str
    atoms: tuple[str, ...]
    parts: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    last_layer_of: tuple[str, ...] = ()
    everything: bool = False
    lora: bool = False  # true for qlora as well
    qlora: bool = False
    adapter: bool = False

    @property
    def peft(self) -> str | None:
        """"lora", "adaption_prompt" or None: how PEFT wraps the model."""
        if self.lora:
            return "lora"
        return "adaption_prompt" if self.adapter else None

    def trains(self, name: str) -> bool:
        """Whether the parameter `name` (as the unwrapped model spells it) trains fully. The last layer of a
        `last_layer_of` list is not counted: which one it is depends on the model's config."""
        if self.everything or part_of(name, get_family(self.family)) in self.parts:
            return True
        return any(_under(name, prefix) for prefix in self.prefixes)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# ---------------------------------------------------------------------------------------------------- resolving


def resolve_policy(policy: str, family: str) -> ResolvedPolicy:
    """Parse `policy` ("lora+projector") for `family`; a ConfigError names any atom that is unknown, does not
    apply to the family (and why), or contradicts another."""
    spec = get_family(family)
    atoms = _parse(policy)
    for atom in atoms:
        reason = _why_not(atom, spec)
        if reason is not None:
            raise ConfigError(f"train policy '{atom}' does not apply to {family}: {reason}; policies that apply to "
                              f"{family}: {', '.join(applicable_atoms(family))}")
    _check_combination(atoms)
    parts: list[str] = []
    prefixes: list[str] = []
    for atom in atoms:
        atom_parts, atom_prefixes = _atom_selection(atom, spec)
        parts += [p for p in atom_parts if p not in parts]
        prefixes += [p for p in atom_prefixes if p not in prefixes]
    return ResolvedPolicy(
        policy="+".join(atoms),
        family=family,
        atoms=atoms,
        parts=tuple(parts),
        prefixes=tuple(prefixes),
        last_layer_of=spec.groups.get("vision_layers", ()) if "vision-last" in atoms else (),
        everything="all" in atoms,
        lora="lora" in atoms or "qlora" in atoms,
        qlora="qlora" in atoms,
        adapter="adapter" in atoms,
    )


def applicable_atoms(family: str) -> list[str]:
    """The policy atoms that apply to `family`, sorted."""
    spec = get_family(family)
    return sorted(atom for atom in POLICIES if _why_not(atom, spec) is None)


def _parse(policy: str) -> tuple[str, ...]:
    atoms = [a.strip() for a in str(policy).split("+")]
    if not policy or any(not a for a in atoms):
        raise ConfigError(f"train policy '{policy}' has an empty atom; write atoms joined by '+', e.g. "
                          f"lora+projector; known: {', '.join(sorted(POLICIES))}")
    unknown = [a for a in atoms if a not in POLICIES]
    if unknown:
        raise ConfigError(f"unknown train policy '{unknown[0]}' in '{policy}'; known: {', '.join(sorted(POLICIES))}")
    return tuple(dict.fromkeys(atoms))  # repeated atoms add nothing


def check_policy(policy: str) -> tuple[str, ...]:
    """The atoms of a policy string, or a ConfigError for unknown atoms and combinations that cannot work; no
    family needed (recipes are checked with it before any model is loaded)."""
    atoms = _parse(policy)
    _check_combination(atoms)
    return atoms


def _why_not(atom: str, spec: Family) -> str | None:
    if atom in spec.not_applicable:
        return spec.not_applicable[atom]
    if atom not in _WHAT:
        return None
    kind, key, what = _WHAT[atom]
    present = spec.groups if kind == "group" else spec.parts
    if key in present:
        return None
    having = [f.name for f in FAMILIES.values() if key in (f.groups if kind == "group" else f.parts)]
    return f"{spec.name} has no {what} (families with one: {', '.join(having)})"


def _check_combination(atoms: tuple[str, ...]) -> None:
    joined = "+".join(atoms)
    if "all" in atoms and len(atoms) > 1:
        raise ConfigError(f"train policy '{joined}': 'all' already trains every parameter; use it alone")
    wrappers = [a for a in atoms if a in _PEFT_ATOMS]
    if len(wrappers) > 1:
        raise ConfigError(f"train policy '{joined}': {' and '.join(wrappers)} cannot be combined (PEFT wraps a model "
                          "with one method; qlora already is lora on a 4-bit model)")
    if wrappers and "llm" in atoms:
        raise ConfigError(f"train policy '{joined}': {wrappers[0]} already trains the language model through PEFT and "
                          "llm would train all of it as well; choose one")


def _atom_selection(atom: str, spec: Family) -> tuple[list[str], list[str]]:
    """(parts, prefixes) an atom trains fully."""
    if atom == "llm":
        return [p for p in ("language_model", "lm_head") if p in spec.parts], []
    if atom in ("vision", "xattn"):
        return [atom], []
    if atom == "projector":
        return [], list(spec.groups["projector"])
    if atom == "qformer":  # BLIP-2 trains the language projection with its Q-Former
        return [], list(spec.groups["qformer"]) + list(spec.groups.get("projector", ()))
    if atom == "resampler":
        return [], list(spec.groups["resampler"])
    if atom == "vision-last":  # the last layer itself is found on the model (last_layer_of)
        return [], list(spec.groups.get("vision_post_norm", ()))
    return [], []  # all, lora, qlora, adapter


# ---------------------------------------------------------------------------------------------------- applying


def apply_train_policy(model, family: str, policy: str, lora: LoraSettings | None = None,
                       adapter: AdapterSettings | None = None):
    """Freeze `model`, unfreeze what `policy` trains and wrap it with PEFT for lora/qlora/adapter.

    Returns the model, a `peft.PeftModel` around it when PEFT wraps it. Works on a model as loaded (any dtype,
    CPU or GPU); qlora needs one loaded in 4-bit (`qlora_quantization_config`)."""
    resolved = resolve_policy(policy, family)
    spec = get_family(family)
    if is_peft_model(model):
        raise ConfigError(f"train policy '{policy}': the model is already PEFT-wrapped; apply a policy to the base "
                          "model")
    full = _fully_trained(model, resolved)
    if resolved.qlora:
        _prepare_qlora(model, policy)
    for param in model.parameters():
        param.requires_grad_(False)
    if resolved.lora:
        return _wrap_lora(model, spec, resolved, full, lora or LoraSettings())
    if resolved.adapter:
        return _wrap_adapter(model, spec, full, adapter or AdapterSettings())
    _unfreeze(model, full)
    return model


def is_peft_model(model) -> bool:
    """A PEFT wrapper (LoRA, adapters): it has adapters and a base model under it. Duck-typed so that checking
    needs no import of peft."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _fully_trained(model, resolved: ResolvedPolicy) -> set[str]:
    """Names (as model.named_parameters spells them) of the parameters the policy trains fully."""
    prefixes = [_last_feeding_layer(model, container) for container in resolved.last_layer_of]
    return {
        name for name, _ in model.named_parameters()
        if resolved.trains(name) or any(_under(name, p) for p in prefixes)
    }


def _last_feeding_layer(model, container: str) -> str:
    """The prefix of the last layer in `container` whose output the connector reads.

    LLaVA-style configs pick the features by `vision_feature_layer`, an index into the tower's hidden states
    (0: embeddings, i: output of layer i-1), so LLaVA-1.5's -2 makes the penultimate layer the last one that
    matters: training the last would change nothing."""
    n = len(model.get_submodule(container))
    feature_layer = getattr(model.config, "vision_feature_layer", -1)
    indexes = feature_layer if isinstance(feature_layer, (list, tuple)) else [feature_layer]
    last = max(index % (n + 1) for index in indexes) - 1
    if last < 0:
        raise ConfigError(f"train policy 'vision-last': the connector reads the vision embeddings "
                          f"(vision_feature_layer={feature_layer}), no vision layer feeds it")
    return f"{container}.{last}"


def _unfreeze(model, names: Iterable[str]) -> None:
    params = dict(model.named_parameters())
    for name in names:
        params[name].requires_grad_(True)


def _linear_modules(model, spec: Family, parts: tuple[str, ...]) -> dict[str, object]:
    """{name: module} of every nn.Linear in `parts`, without the output embedding (tied or not)."""
    from torch import nn

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {
        name: module for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not output and part_of(name, spec) in parts
    }


def _covering_modules(model, names: set[str]) -> tuple[list[str], list[str]]:
    """(modules, bare): the largest modules all of whose parameters are in `names`, and the parameters of `names`
    no such module holds (parameters set directly on a module that is only partly trained)."""
    from torch import nn

    containers = (nn.ModuleList, nn.ModuleDict)  # no forward of their own: PEFT cannot wrap them, take the items
    modules: list[str] = []
    covered: set[str] = set()
    for name, module in model.named_modules():
        if not name or isinstance(module, containers) or any(_under(name, m) for m in modules):
            continue
        params = {f"{name}.{p}" for p, _ in module.named_parameters()}
        if params and params <= names:
            modules.append(name)
            covered |= params
    return modules, sorted(names - covered)


# ---------------------------------------------------------------------------------------------------- LoRA / QLoRA


def _wrap_lora(model, spec: Family, resolved: ResolvedPolicy, full: set[str], settings: LoraSettings):
    from peft import LoraConfig, get_peft_model

    save_modules, bare = _covering_modules(model, full)
    targets = _lora_targets(model, spec, settings, resolved.policy)
    # A module that trains fully is copied by modules_to_save; LoRA inside it would train twice.
    targets = [t for t in targets if not any(_under(t, m) for m in save_modules)]
    if not targets:
        raise ConfigError(f"train policy '{resolved.policy}': every LoRA target also trains fully; drop lora or the "
                          "part it overlaps")
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        bias=settings.bias,
        target_modules=targets,
        modules_to_save=save_modules or None,
        task_type="CAUSAL_LM",
    )
    with _quiet_peft():
        peft_model = get_peft_model(model, config)
    # modules_to_save needs a module; a bare parameter trains in place and is saved by save_trained.
    _unfreeze(peft_model.get_base_model(), bare)
    return peft_model


@contextmanager
def _quiet_peft():
    """PEFT 0.21 reads `is_gradient_checkpointing`, which transformers 5 deprecates with a FutureWarning per call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _lora_targets(model, spec: Family, settings: LoraSettings, policy: str) -> list[str]:
    parts = ("language_model",) + (("vision",) if settings.include_vision else ())
    if settings.include_vision and "vision" in spec.not_applicable:
        raise ConfigError(f"train policy '{policy}': lora include_vision does not apply to {spec.name}: "
                          f"{spec.not_applicable['vision']}")
    candidates = list(_linear_modules(model, spec, parts))
    chosen = [n for n in candidates if _matches_target(n, settings.target)]
    if not chosen:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in candidates})
        raise ConfigError(f"lora target {settings.target!r} matches no linear layer of the {'/'.join(parts)} in "
                          f"{spec.name}; its linear layers end in: {', '.join(leaves)}")
    return chosen


def _matches_target(name: str, target: str | list[str]) -> bool:
    if target == "all-linear":
        return True
    if isinstance(target, str) and not re.fullmatch(r"[\w.]+(,[\w.]+)*", target):
        return re.fullmatch(target, name) is not None
    suffixes = target.split(",") if isinstance(target, str) else target
    return any(name == s or name.endswith("." + s) for s in suffixes)


def qlora_quantization_config(family: str, compute_dtype: str = "bfloat16"):
    """The BitsAndBytesConfig to load a model with for qlora: the language model in 4-bit NF4 with double
    quantization (QLoRA's recipe); the vision encoder, connector and output head stay in `compute_dtype`."""
    import torch
    from transformers import BitsAndBytesConfig

    spec = get_family(family)
    keep = [prefix for part in ("vision", "connector", "xattn", "lm_head") for prefix in spec.parts.get(part, ())]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
        llm_int8_skip_modules=list(dict.fromkeys(keep + ["lm_head"])),  # "lm_head" also catches tied heads
    )


def _prepare_qlora(model, policy: str) -> None:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"train policy '{policy}': qlora needs a CUDA GPU and bitsandbytes; no CUDA device is "
                          "available here (use lora on a CPU)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"train policy '{policy}': qlora needs bitsandbytes (pip install bitsandbytes); or use lora")
    if not getattr(model, "is_loaded_in_4bit", False):
        raise ConfigError(f"train policy '{policy}': qlora needs the model loaded in 4-bit (quantization_config="
                          "align.models.freeze.qlora_quantization_config(family)); this one is not quantized")
    from peft import prepare_model_for_kbit_training

    # Casts the unquantized norms and embeddings to float32 for stable training; checkpointing is the trainer's call.
    prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


# ---------------------------------------------------------------------------------------------------- adapter


def _wrap_adapter(model, spec: Family, full: set[str], settings: AdapterSettings):
    from peft import AdaptionPromptConfig, get_peft_model

    attentions = _decoder_attentions(model, spec)
    _check_adapter_fits(model, spec, attentions)
    layers = min(settings.layers, len(attentions))
    norms = _decoder_norm_parameters(model, spec) if settings.v2 else set()
    if settings.v2:
        _add_bias_and_scale(_linear_modules(model, spec, ("language_model",)).values())
    _register_adaption_prompt(model.config.model_type, _decoder_type(model, spec))
    config = AdaptionPromptConfig(adapter_len=settings.prompt_length, adapter_layers=layers,
                                  target_modules="self_attn", task_type="CAUSAL_LM")
    with _quiet_peft():
        peft_model = get_peft_model(model, config)
    _check_adapted_layers(peft_model.get_base_model(), spec)
    # PEFT froze all but `adaption_*` parameters (prompts, gates, and the V2 bias/scale named to match).
    _unfreeze(peft_model.get_base_model(), full | norms)
    return peft_model


def _decoder_type(model, spec: Family) -> str:
    text_config = getattr(model.config, "text_config", None)
    return spec.decoder_type or getattr(text_config, "model_type", None) or model.config.model_type


def _decoder_attentions(model, spec: Family) -> list[str]:
    """Names of the decoder's self-attention modules, bottom to top."""
    return [name for name, _ in model.named_modules()
            if name.endswith(".self_attn") and part_of(name, spec) == "language_model"]


def _check_adapter_fits(model, spec: Family, attentions: list[str]) -> None:
    decoder = _decoder_type(model, spec)
    if decoder not in _ADAPTER_DECODERS:
        raise ConfigError(f"train policy 'adapter' does not apply to this {spec.name} checkpoint: its decoder is "
                          f"{decoder}, and PEFT's adaption prompt supports Llama-style decoders only "
                          f"({', '.join(_ADAPTER_DECODERS)})")
    if not attentions:
        raise ConfigError(f"train policy 'adapter': no self_attn modules in {spec.name}'s language model")
    normed = [n for n, _ in model.get_submodule(attentions[0]).named_children() if "norm" in n]
    if normed:  # Chameleon-style q_norm/k_norm (IDEFICS' qk_layer_norms only touch its cross-attention)
        raise ConfigError(f"train policy 'adapter' does not apply to this {spec.name} checkpoint: its attention "
                          f"normalises queries ({', '.join(normed)}), which PEFT's adaption prompt does not recompute")


def _register_adaption_prompt(model_type: str, decoder: str) -> None:
    """Let PEFT's adaption prompt wrap a VLM whose decoder it knows.

    PEFT looks its per-architecture entry up by the wrapped model's config.model_type ("llava"), which it does not
    know; the entry of the decoder inside ("llama") is the right one. Registered once per process."""
    from peft.tuners.adaption_prompt.config import TRANSFORMERS_MODEL_CONFIG

    entry = TRANSFORMERS_MODEL_CONFIG[decoder]
    known = TRANSFORMERS_MODEL_CONFIG.setdefault(model_type, entry)
    if known != entry:
        raise ConfigError(f"train policy 'adapter': PEFT already maps model type '{model_type}' to another decoder; "
                          "one process cannot adapt two kinds")


def _check_adapted_layers(model, spec: Family) -> None:
    # PEFT takes the last `layers` modules named self_attn in the whole model; the vision tower's come first, so
    # they are the decoder's while layers <= its depth. Fail loudly should a family ever order them otherwise.
    from peft.tuners.adaption_prompt.layer import AdaptedAttention

    stray = [name for name, module in model.named_modules()
             if isinstance(module, AdaptedAttention) and part_of(name, spec) != "language_model"]
    if stray:
        raise ConfigError(f"train policy 'adapter': PEFT put adaption prompts outside {spec.name}'s language model "
                          f"({', '.join(stray)})")


def _decoder_norm_parameters(model, spec: Family) -> set[str]:
    """Names of the language model's normalisation weights (LLaMA-Adapter V2 trains them)."""
    names = set()
    for module_name, module in model.named_modules():
        kind = type(module).__name__
        if part_of(module_name, spec) == "language_model" and (kind.endswith("Norm") or "LayerNorm" in kind):
            names |= {f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False)}
    return names


def _add_bias_and_scale(linears: Iterable) -> None:
    """LLaMA-Adapter V2's bias tuning: y = scale * (W x + b + bias), with bias 0 and scale 1 so the model starts
    unchanged. Named `adaption_*` so PEFT's adaption-prompt state dict (which keeps exactly those) saves them."""
    import torch

    for linear in linears:
        kwargs = {"device": linear.weight.device, "dtype": linear.weight.dtype}
        linear.register_parameter("adaption_bias", torch.nn.Parameter(torch.zeros(linear.out_features, **kwargs)))
        linear.register_parameter("adaption_scale", torch.nn.Parameter(torch.ones(linear.out_features, **kwargs)))
        linear.register_forward_hook(_bias_and_scale)


def _bias_and_scale(module, inputs, output):
    return (output + module.adaption_bias) * module.adaption_scale


# ---------------------------------------------------------------------------------------------------- reporting, saving


def trainable_parts_table(model, family: str, title: str | None = None):
    """A rich Table of trainable and frozen parameter counts per part; PEFT weights (LoRA, adaption prompts,
    modules_to_save copies) count under the part of the module they attach to, tied weights once."""
    from align.models.families import count_parameters_by_part
    from align.models.report import part_counts_table

    counts = count_parameters_by_part(model, get_family(family))
    return part_counts_table(counts, title or f"trainable parameters ({family})")


def extra_state_dict(model) -> dict:
    """Trainable parameters of a PEFT-wrapped model that its adapter file does not hold, keyed by their names in
    the unwrapped model: bare parameters under lora (LLaVA-NeXT's image_newline, BLIP-2's query tokens) and the
    norms and fully trained parts under adapter. Empty for a model PEFT does not wrap."""
    if not is_peft_model(model):
        return {}
    from peft.utils import get_peft_model_state_dict

    # The adapter state dict holds the parameters' own storage, so storage identity says what it covers.
    in_adapter = {t.data_ptr() for t in get_peft_model_state_dict(model).values()}
    return {name: p.detach() for name, p in model.get_base_model().named_parameters()
            if p.requires_grad and p.data_ptr() not in in_adapter}


def save_trained(model, out: str | Path, state_dict: dict | None = None) -> Path:
    """Save what the policy trained: the whole model when PEFT does not wrap it; else the adapter
    (`save_pretrained`) plus EXTRA_WEIGHTS with `extra_state_dict` when it is not empty. `state_dict`: the model's
    full state dict when the caller gathered it (ZeRO-3, where the model's own parameters are empty shards); the
    extra weights are then taken from it."""
    import warnings

    from safetensors.torch import save_file

    out = Path(out)
    with warnings.catch_warnings():
        if state_dict is not None:  # PEFT checks the module's own (ZeRO-3: empty) tensors, not the gathered ones
            warnings.filterwarnings("ignore", message=r".*LoRA tensor\(s\) have invalid shape")
        model.save_pretrained(str(out), **({} if state_dict is None else {"state_dict": state_dict}))
    extra = extra_state_dict(model)
    if extra:
        if state_dict is not None:  # PEFT keys the base model's parameters under base_model.model.
            extra = {n: state_dict.get(f"base_model.model.{n}", t) for n, t in extra.items()}
        save_file({n: t.detach().contiguous().cpu() for n, t in extra.items()}, str(out / EXTRA_WEIGHTS))
    return out


def sub_state_dict(state_dict: dict, prefix: str) -> dict:
    """The entries of a module's state dict under `prefix` ("policy."), keyed as the submodule keys them."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_trained(model, family: str, policy: str, folder: str | Path, lora: LoraSettings | None = None,
                 adapter: AdapterSettings | None = None):
    """The base `model`, wrapped for a PEFT `policy` as when it trained (same settings), with what `save_trained`
    wrote put back. A policy PEFT does not wrap saved a whole checkpoint: load that folder as the model instead."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    if resolve_policy(policy, family).peft is None:
        raise ConfigError(f"train policy '{policy}' saves a whole checkpoint, not an adapter; load {folder} as the "
                          "model")
    model = apply_train_policy(model, family, policy, lora=lora, adapter=adapter)
    result = set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    if result.unexpected_keys:
        raise ConfigError(f"{folder}: adapter weights the policy '{policy}' does not create: "
                          f"{', '.join(result.unexpected_keys[:5])}")
    extra_path = folder / EXTRA_WEIGHTS
    if extra_path.is_file():
        _, unexpected = model.get_base_model().load_state_dict(load_file(str(extra_path)), strict=False)
        if unexpected:
            raise ConfigError(f"{extra_path}: weights the model does not have: {', '.join(unexpected[:5])}")
    return model
