"""`make_plan`: the memory one GPU needs for a training command, from a model's config alone.

The models a command loads (align/train):
  sft     the policy
  dpo     the policy; a reference, a frozen copy of the starting model, unless PEFT wraps the policy (LoRA,
          adapter: the adapter-disabled policy is the reference) or the reference log-probs are cached
  reward  backbone + scalar head, trained
  ppo     the policy; the reference as in dpo; a frozen reward model (the same architecture + scalar head); a
          critic (the same architecture + scalar head, trained with its own policy, LoRA by default), whose
          trainable parameters share the policy's optimizer (one DeepSpeed engine carries both)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from align.errors import ConfigError
from align.plan.activations import (
    Pass,
    kv_cache_bytes,
    layer_shape,
    num_layers,
    per_sample_bytes,
    text_stack,
    vision_stack,
    vocab_size,
)
from align.plan.memory import (
    GIB,
    Placement,
    StateBytes,
    ZeroSetup,
    element_bytes,
    fits,
    frozen_weights,
    gathered_layer,
    trainable_states,
)
from align.plan.settings import COMMANDS, PlanSettings

# Rows of the memory table and the keys of `per_rank_bytes` / `cpu_bytes`, in order.
TERMS = {
    "trainable_weights": "trainable weights",
    "gradients": "gradients",
    "optimizer_states": "optimizer states",
    "frozen_weights": "frozen weights",
    "gathered_layer": "ZeRO-3 gathered layer",
    "reference_model": "reference model",
    "reward_model": "reward model",
    "critic": "critic (value model)",
    "activations": "activations",
}


@dataclass
class MemoryPlan:
    settings: PlanSettings
    family: str
    source: str
    policy: str
    zero: ZeroSetup
    parameters: int
    trainable_parameters: int
    parts: dict[str, dict[str, int]]
    models: dict[str, object]
    placements: dict[str, Placement]
    activations: dict[str, dict[str, int]]  # {"with_checkpointing", "without_checkpointing"}: per-sample parts
    largest_micro_batch: int
    notes: list[str] = field(default_factory=list)

    @property
    def per_rank_bytes(self) -> dict[str, int]:
        out = {key: p.gpu for key, p in self.placements.items()}
        out["total"] = sum(out.values())
        return out

    @property
    def cpu_bytes(self) -> dict[str, int]:
        out = {key: p.cpu for key, p in self.placements.items() if p.cpu}
        out["total"] = sum(out.values())
        return out

    def to_json(self) -> dict:
        s = self.settings
        b = s.micro_batch
        return {
            "model": s.model, "config_source": self.source, "family": self.family, "command": s.command,
            "variant": s.variant, "train": self.policy, "deepspeed": s.deepspeed, "zero_stage": self.zero.stage,
            "offload_optimizer": self.zero.offload_optimizer, "offload_param": self.zero.offload_param,
            "gpus": s.gpus, "gpu_memory_gib": s.gpu_memory, "micro_batch": b, "seq_len": s.seq_len,
            "dtype": s.dtype, "gradient_checkpointing": s.gradient_checkpointing,
            "cached_reference": s.cached_reference, "lora_r": s.lora_r,
            "parameters": self.parameters, "trainable_parameters": self.trainable_parameters, "parts": self.parts,
            "models": self.models,
            "per_rank_bytes": self.per_rank_bytes, "cpu_bytes": self.cpu_bytes,
            "cpu_bytes_all_ranks": self.cpu_bytes["total"] * s.gpus,
            "activations": {
                "with_checkpointing": self.activations["with_checkpointing"]["total"] * b,
                "without_checkpointing": self.activations["without_checkpointing"]["total"] * b,
                "per_sample": self.activations,
                "sequences_per_sample": s.rows,
            },
            "largest_micro_batch": self.largest_micro_batch,
            "estimate": True,
            "notes": self.notes,
        }


def make_plan(settings: PlanSettings) -> MemoryPlan:
    """Load the config, count parameters under the policy on the meta device, and add up one rank's bytes."""
    from align.models.families import family_of, get_family
    from align.models.freeze import AdapterSettings, LoraSettings, resolve_policy
    from align.plan.meta import count_policy, load_plan_config

    s = settings
    command = COMMANDS[s.command]
    zero = _zero_setup(s.deepspeed)
    config, source = load_plan_config(s.model, offline=s.offline)
    family = family_of(config)
    policy = s.train or command.default_policy or get_family(family).natural_policy
    resolved = resolve_policy(policy, family)  # an atom that does not apply to the family fails here, listing those
    if resolved.qlora:
        raise ConfigError("train policy 'qlora' is not planned (its 4-bit base weights need bitsandbytes' layout); "
                          "plan 'lora' instead: the language model's frozen weights then take about a quarter")
    lora = LoraSettings(r=s.lora_r)
    counts = count_policy(config, family, policy, lora=lora, adapter=AdapterSettings())
    per = StateBytes.for_dtype(s.dtype)
    element = element_bytes(s.dtype)
    head = config.get_text_config().hidden_size + 1 if (command.scalar_head or command.critic) else 0

    trainable = counts.trainable + (head if command.scalar_head else 0)
    placements = trainable_states(trainable, zero, s.gpus, per)
    placements["frozen_weights"] = frozen_weights(counts.frozen, zero, s.gpus, per.weights)
    placements["gathered_layer"] = gathered_layer(counts.largest_layer, counts.largest_trainable_layer, zero, per)
    models: dict[str, object] = {"policy": {"total": counts.total, "trainable": trainable,
                                            "largest_layer": counts.largest_layer}}
    notes = []

    reference = command.reference and resolved.peft is None and not s.cached_reference
    if command.reference:
        if reference:
            placements["reference_model"] = frozen_weights(counts.base, zero, s.gpus, per.weights)
            models["reference"] = counts.base
        else:
            models["reference"] = None
            notes.append("no reference model: " + ("the reference log-probs are cached" if s.cached_reference
                                                   else "the adapter-disabled policy is the reference"))
    if command.reward_model:
        reward = counts.base + head
        placements["reward_model"] = frozen_weights(reward, zero, s.gpus, per.weights)
        models["reward_model"] = reward
        notes.append("ppo: the reward model is assumed to be the policy's architecture + a scalar head")
    critic_counts = None
    if command.critic:
        critic_counts = _critic_counts(config, family, policy, counts, lora)
        critic_trainable = critic_counts.trainable + head
        states = trainable_states(critic_trainable, zero, s.gpus, per)
        critic = frozen_weights(critic_counts.frozen, zero, s.gpus, per.weights)
        for p in states.values():
            critic = critic + p
        placements["critic"] = critic
        models["critic"] = {"total": critic_counts.total + head, "trainable": critic_trainable,
                            "train": _value_train()}

    activations = {
        "with_checkpointing": per_sample_bytes(_passes(config, s, family, counts, critic_counts), element, True),
        "without_checkpointing": per_sample_bytes(_passes(config, s, family, counts, critic_counts), element, False),
    }
    chosen = activations["with_checkpointing" if s.gradient_checkpointing else "without_checkpointing"]["total"]
    placements["activations"] = Placement(gpu=chosen * s.micro_batch)
    placements = {key: placements.get(key, Placement()) for key in TERMS}
    fixed = sum(p.gpu for key, p in placements.items() if key != "activations")
    if s.command == "dpo" and get_family(family).shared_layouts:
        notes.append("dpo: prefix_sharing (on by default for this family) runs each pair's shared prompt and image "
                     "once; the two whole rows counted here are an upper bound")
    if s.command == "ppo":
        text = config.get_text_config()
        kv = kv_cache_bytes(num_layers(text), layer_shape(text).kv_hidden, s.seq_len, element) * s.micro_batch
        notes.append(f"ppo: generation's KV cache (~{kv / GIB:.2f} GiB for {s.micro_batch} x {s.seq_len} tokens) is "
                     "not counted: it lives in the rollout phase, when no activations are kept")
    return MemoryPlan(
        settings=s, family=family, source=source, policy=resolved.policy, zero=zero, parameters=counts.base,
        trainable_parameters=trainable,
        parts=counts.parts, models=models, placements=placements, activations=activations,
        largest_micro_batch=fits(s.gpu_memory * GIB, fixed, chosen), notes=notes,
    )


def _zero_setup(deepspeed: str | None) -> ZeroSetup:
    """From a preset name or a DeepSpeed JSON file; no DeepSpeed: stage 0."""
    from align.train.common import resolve_deepspeed

    path = resolve_deepspeed(deepspeed)  # an unknown name is refused there, listing the presets
    if path is None:
        return ZeroSetup()
    return ZeroSetup.from_deepspeed_config(json.loads(Path(path).read_text(encoding="utf-8")))


def _value_train() -> str:
    from align.train.ppo.settings import AlignPPOConfig

    return AlignPPOConfig.__dataclass_fields__["value_train"].default


def _critic_counts(config, family, policy, counts, lora):
    """The critic's backbone under `value_train` (its own copy of the weights, initialised from the reward
    model); counted again only when its policy differs from the policy's."""
    from align.plan.meta import count_policy

    value_train = _value_train()
    return counts if value_train == policy else count_policy(config, family, value_train, lora=lora)


def _passes(config, s: PlanSettings, family: str, counts, critic_counts) -> list[Pass]:
    """The forwards whose activations backward needs (module docstring of align.plan.activations)."""
    from align.models.families import get_family

    command = COMMANDS[s.command]
    logits = 0 if command.scalar_head or get_family(family).fused_lm_head else s.seq_len * vocab_size(config)
    passes = [Pass("policy", s.rows, _stacks(config, s.seq_len, counts), logits)]
    if critic_counts is not None:  # a value per token from the last hidden states: no logits
        passes.append(Pass("critic", 1, _stacks(config, s.seq_len, critic_counts)))
    return passes


def _stacks(config, seq_len: int, counts) -> tuple:
    stacks = [text_stack(config, seq_len)]
    vision = vision_stack(config, counts.vision_layers_kept)
    if vision is not None:
        stacks.append(vision)
    return tuple(stacks)
