"""`align plan`: estimate one GPU's memory for a training command from the model's config (no weights)."""

from __future__ import annotations

from typing import Annotated

import typer

from align.cli._options import DeepSpeedOpt, TrainOpt
from align.plan.settings import COMMANDS
from align.train.dpo.variants import VARIANTS


def plan(
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint folder (only config.json is read) or hub "
                                                             "id (built-in configs answer offline).")],
    command: Annotated[str, typer.Option("--command", help=f"Training command: {', '.join(COMMANDS)}.")],
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs the run uses (ZeRO partitions over them).")],
    train: TrainOpt = None,
    variant: Annotated[str | None, typer.Option("--variant", "-v", help=f"dpo only: {', '.join(VARIANTS)}.")] = None,
    deepspeed: DeepSpeedOpt = None,
    gpu_memory: Annotated[float, typer.Option("--gpu-memory", help="GiB per GPU.")] = 80.0,
    micro_batch: Annotated[int, typer.Option("--micro-batch", help="Samples per GPU (pairs for dpo and reward).")] = 1,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sequence, image tokens included.")] = 2048,
    dtype: Annotated[str, typer.Option("--dtype", help="bf16 (mixed precision) or float32.")] = "bf16",
    gradient_checkpointing: Annotated[bool, typer.Option(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Count activations with per-layer checkpointing (a run's activation_checkpointing).")] = True,
    cached_reference: Annotated[bool, typer.Option(
        "--cached-reference", help="dpo: reference log-probs precomputed (precompute_ref_log_probs): no reference "
                                   "model.")] = False,
    lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank for lora policies.")] = 16,
    offline: Annotated[bool, typer.Option("--offline", help="Never ask the hub: a local folder or a built-in "
                                                            "config.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
) -> None:
    """Per-GPU memory of a training run (weights, gradients, optimizer states, frozen and extra models,
    activations) and the largest micro-batch that fits: an estimate from the config alone."""
    import json

    from align.plan.planner import make_plan
    from align.plan.report import print_plan
    from align.plan.settings import PlanSettings

    result = make_plan(PlanSettings(
        model=model, command=command, gpus=gpus, train=train, variant=variant, deepspeed=deepspeed,
        gpu_memory=gpu_memory, micro_batch=micro_batch, seq_len=seq_len, dtype=dtype,
        gradient_checkpointing=gradient_checkpointing, cached_reference=cached_reference, lora_r=lora_r,
        offline=offline))
    if as_json:
        typer.echo(json.dumps(result.to_json()))
    else:
        print_plan(result)
