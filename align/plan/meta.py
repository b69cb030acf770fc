"""A model's config (local folder, the hub, or a built-in copy) and its parameter counts from a meta-device build.

Built-in configs (`configs/<org>--<name>.json`) are the published config.json files of well-known checkpoints,
architecture fields only, so that `align plan` answers offline. Chameleon's carries one entry of its 65,536-entry
`vocabulary_map` (the image token, which building the model reads); the rest maps token names for the processor.

The model is built on the meta device (shapes, no storage), and the train policy is applied with align's own
`apply_train_policy`, so the trainable set is exactly what a run trains: PEFT wraps meta modules as it wraps real
ones (LoRA's A and B matrices are created on the meta device too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from align.errors import ModelError

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def builtin_configs() -> dict[str, Path]:
    """{hub id: built-in config file}: `org--name.json` holds org/name's config."""
    return {path.stem.replace("--", "/", 1): path for path in sorted(CONFIGS_DIR.glob("*.json"))}


def config_from_dict(values: dict, where: str):
    """A transformers config from config.json's contents."""
    from transformers import AutoConfig

    from align.models.families import FAMILIES

    values = dict(values)
    model_type = values.pop("model_type", None)
    if model_type is None:
        raise ModelError(f"{where} has no model_type; supported families: {', '.join(sorted(FAMILIES))}")
    try:
        return AutoConfig.for_model(model_type, **values)
    except (ValueError, KeyError):
        raise ModelError(f"{where}: model type '{model_type}' is not a supported family; supported: "
                         f"{', '.join(sorted(FAMILIES))}") from None


def _looks_local(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text.count("/") != 1


def load_plan_config(model: str, offline: bool = False):
    """(config, where it came from): a local folder's config.json (nothing else is read), else the hub's
    config.json, else the built-in copy when the hub cannot be reached or `offline`."""
    from align.models.load import load_config

    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ModelError(f"{folder} has no config.json (the planner reads only that file; point --model at a "
                             "checkpoint folder or a hub id)")
        return load_config(folder), "local folder"
    builtins = builtin_configs()
    if _looks_local(model) or folder.is_file():
        raise ModelError(f"--model '{model}' is neither a checkpoint folder nor a hub id (org/name); built-in "
                         f"configs: {', '.join(builtins)}")
    why = "offline"
    if not offline:
        try:
            return load_config(model), "hub"
        except ModelError as exc:  # offline, unreachable, gated, or no such repository
            why = str(exc)
    if model in builtins:
        values = json.loads(builtins[model].read_text(encoding="utf-8"))
        return config_from_dict(values, str(builtins[model])), "built-in config"
    raise ModelError(f"no config for '{model}': the hub gave none ({why}) and there is no built-in copy; built-in "
                     f"configs: {', '.join(builtins)}")


def build_meta_model(config, family: str):
    """The model with every parameter on the meta device: shapes only, built in seconds even for 13B."""
    import torch

    from align.models.families import get_family

    with torch.device("meta"):
        return get_family(family).auto_class().from_config(config)


@dataclass(frozen=True)
class PolicyCounts:
    """Parameter counts of one model under one train policy."""

    base: int  # parameters of the model as published (tied weights once)
    parts: dict[str, dict[str, int]]  # {part: {"total", "trainable"}} after the policy (PEFT weights included)
    largest_layer: int  # the most parameters one module holds directly (DeepSpeed's largest_layer_params)
    largest_trainable_layer: int
    vision_layers_kept: int  # vision layers that keep activations (from the lowest trained one up)

    @property
    def total(self) -> int:
        return sum(c["total"] for c in self.parts.values())

    @property
    def trainable(self) -> int:
        return sum(c["trainable"] for c in self.parts.values())

    @property
    def frozen(self) -> int:
        return self.total - self.trainable


def count_policy(config, family: str, policy: str, lora=None, adapter=None) -> PolicyCounts:
    """Build `config` on the meta device, apply `policy` as a run does and count."""
    from align.models.families import count_parameters_by_part, get_family
    from align.models.freeze import apply_train_policy, is_peft_model

    spec = get_family(family)
    model = build_meta_model(config, family)
    base = sum(c["total"] for c in count_parameters_by_part(model, spec).values())
    model = apply_train_policy(model, family, policy, lora=lora, adapter=adapter)
    parts = count_parameters_by_part(model, spec)
    largest = largest_trainable = 0
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        largest = max(largest, sum(p.numel() for p in own))
        largest_trainable = max(largest_trainable, sum(p.numel() for p in own if p.requires_grad))
    unwrapped = model.get_base_model() if is_peft_model(model) else model
    return PolicyCounts(base, parts, largest, largest_trainable, _vision_layers_kept(unwrapped, spec))


def _vision_layers_kept(model, spec) -> int:
    """Vision layers from the lowest one with a trained parameter up; all of them when a parameter before the
    layers trains (patch embedding), none when only what comes after them trains (the post-layer norm)."""
    from align.models.families import part_of

    containers = spec.groups.get("vision_layers", ())
    if not containers:
        return 0
    container = containers[0]
    layers = len(model.get_submodule(container))
    after = spec.groups.get("vision_post_norm", ())
    lowest = layers
    for name, param in model.named_parameters():
        if not param.requires_grad or part_of(name, spec) != "vision":
            continue
        if name.startswith(container + "."):
            lowest = min(lowest, int(name[len(container) + 1:].split(".", 1)[0]))
        elif not any(name.startswith(prefix + ".") for prefix in after):
            lowest = 0
    return layers - lowest
