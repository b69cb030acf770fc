"""Model-state bytes per rank: pure arithmetic on parameter counts, following DeepSpeed's accounting.

Per trainable parameter, mixed-precision training with AdamW keeps (bytes):

    precision    weights  gradients  optimizer states
    16-bit       2        2          12  (fp32 master copy 4 + exp_avg 4 + exp_avg_sq 4)
    float32      4        4          8   (exp_avg + exp_avg_sq; the weights are their own master copy)

and a frozen parameter keeps its weights only (2 or 4 bytes). Over N ranks (`ZeroSetup`):

    stage 0 (no DeepSpeed)  everything on every rank
    ZeRO-1                  optimizer states / N
    ZeRO-2                  optimizer states and gradients / N; weights on every rank
    ZeRO-3                  weights (trainable and frozen), gradients and optimizer states / N, plus the layer
                            being computed, gathered whole: its 16-bit weights and gradients (DeepSpeed's
                            `largest_layer_memory`, 4 bytes x the largest layer's parameters)
    offload_optimizer       gradients and optimizer states of the rank's partition live in CPU memory (the
                            optimizer step runs there); the GPU keeps the weights
    offload_param (ZeRO-3)  the weight partitions live in CPU memory too; the GPU holds the gathered layer

Frozen models (the DPO/PPO reference, the PPO reward model) are DeepSpeed inference engines with the training
stage: partitioned (and offloaded with offload_param) under ZeRO-3, whole on every rank under ZeRO-2 and below
(TRL's `prepare_deepspeed` turns ZeRO-1/2 off for them). A partition of n parameters over N ranks is ceil(n / N)
(DeepSpeed pads flat buffers so that they divide evenly).

Nothing here imports torch: the unit tests work these numbers out by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from align.errors import ConfigError

# Bytes of one element per precision name the planner takes (`--dtype`).
DTYPE_BYTES = {"bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "fp32": 4, "float32": 4}
GIB = 1024 ** 3


def element_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"unknown dtype '{dtype}'; known: {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class StateBytes:
    """Bytes kept per trainable parameter (weights, gradients, optimizer states) and per frozen one."""

    weights: int
    gradients: int
    optimizer: int

    @classmethod
    def for_dtype(cls, dtype: str) -> StateBytes:
        # 16-bit: AdamW steps a fp32 master copy (4) with its two fp32 moments (8); float32 has no master copy.
        return cls(2, 2, 12) if element_bytes(dtype) == 2 else cls(4, 4, 8)


@dataclass(frozen=True)
class ZeroSetup:
    """What a DeepSpeed config changes for memory. stage 0: no DeepSpeed (or ZeRO off)."""

    stage: int = 0
    offload_optimizer: bool = False
    offload_param: bool = False

    def __post_init__(self):
        if self.stage not in (0, 1, 2, 3):
            raise ConfigError(f"zero_optimization.stage must be 0, 1, 2 or 3 (got {self.stage})")
        if self.offload_param and self.stage != 3:
            raise ConfigError(f"offload_param needs ZeRO stage 3 (the config has stage {self.stage})")
        if self.offload_optimizer and self.stage == 0:
            raise ConfigError("offload_optimizer needs ZeRO stage 1, 2 or 3 (the config has stage 0)")

    @classmethod
    def from_deepspeed_config(cls, config: dict) -> ZeroSetup:
        """From a DeepSpeed JSON config (a preset or the user's file): stage and where states are offloaded."""
        zero = config.get("zero_optimization") or {}
        if not isinstance(zero, dict):
            raise ConfigError("deepspeed: zero_optimization must be a JSON object")

        def offloaded(key: str) -> bool:
            section = zero.get(key) or {}
            device = section.get("device", "none") if isinstance(section, dict) else "none"
            return str(device) in ("cpu", "nvme")  # nvme: off the GPU too (the planner reports it as CPU bytes)

        try:
            stage = int(zero.get("stage", 0))
        except (TypeError, ValueError):
            raise ConfigError(f"deepspeed: zero_optimization.stage must be 0-3, got {zero.get('stage')!r}") from None
        return cls(stage, offloaded("offload_optimizer"), offloaded("offload_param"))

    @property
    def label(self) -> str:
        if self.stage == 0:
            return "no ZeRO"
        where = [name for name, on in (("optimizer", self.offload_optimizer), ("params", self.offload_param)) if on]
        return f"ZeRO-{self.stage}" + (f", {' + '.join(where)} offloaded to CPU" if where else "")


def partition(n: int, ranks: int) -> int:
    """One rank's share of n elements split over `ranks` (DeepSpeed pads to an even split)."""
    return math.ceil(n / ranks)


@dataclass
class Placement:
    """Bytes on one rank's GPU and in CPU memory for that rank."""

    gpu: int = 0
    cpu: int = 0

    def __add__(self, other: Placement) -> Placement:
        return Placement(self.gpu + other.gpu, self.cpu + other.cpu)


def trainable_states(n: int, zero: ZeroSetup, ranks: int, per: StateBytes) -> dict[str, Placement]:
    """{"trainable_weights", "gradients", "optimizer_states"} for n trainable parameters on one rank."""
    weights = n * per.weights
    grads = n * per.gradients
    optim = n * per.optimizer
    if zero.stage >= 1:
        optim = partition(n, ranks) * per.optimizer
    if zero.stage >= 2:
        grads = partition(n, ranks) * per.gradients
    if zero.stage == 3:
        weights = partition(n, ranks) * per.weights
    return {
        "trainable_weights": Placement(cpu=weights) if zero.offload_param else Placement(gpu=weights),
        # ZeRO-Offload reduces each gradient partition straight into CPU memory, where the optimizer steps.
        "gradients": Placement(cpu=grads) if zero.offload_optimizer else Placement(gpu=grads),
        "optimizer_states": Placement(cpu=optim) if zero.offload_optimizer else Placement(gpu=optim),
    }


def frozen_weights(n: int, zero: ZeroSetup, ranks: int, weight_bytes: int) -> Placement:
    """Weights of n frozen parameters, in a trained model or in a frozen model prepared with the same stage."""
    if zero.stage == 3:
        share = partition(n, ranks) * weight_bytes
        return Placement(cpu=share) if zero.offload_param else Placement(gpu=share)
    return Placement(gpu=n * weight_bytes)


def gathered_layer(largest_layer: int, largest_trainable_layer: int, zero: ZeroSetup, per: StateBytes) -> Placement:
    """ZeRO-3 gathers each layer's weights whole while it computes, and its gradients whole before they are
    reduce-scattered: the largest layer's (DeepSpeed counts 4 bytes x its parameters in 16-bit). Its gradients
    exist only when the layer trains. Zero below stage 3."""
    if zero.stage != 3:
        return Placement()
    return Placement(gpu=largest_layer * per.weights + largest_trainable_layer * per.gradients)


def fits(budget_bytes: float, fixed_bytes: int, per_sample_bytes: int) -> int:
    """The largest micro-batch whose activations (per_sample_bytes each) fit beside fixed_bytes; 0 if none."""
    room = budget_bytes - fixed_bytes
    if room <= 0 or per_sample_bytes <= 0:
        return 0
    return int(room // per_sample_bytes)
