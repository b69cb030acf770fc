"""Pieces every trainer shares: device defaults, DeepSpeed presets, distributed setup, run records."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from align.errors import ConfigError

DEEPSPEED_PRESETS = ("zero2", "zero3", "zero3_offload")


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def cuda_bf16_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_deepspeed(value: str | None) -> str | None:
    """`zero2` / `zero3` / `zero3_offload` -> the shipped JSON; anything else must be an existing JSON file."""
    if value in (None, "", "none"):
        return None
    if value in DEEPSPEED_PRESETS:
        path = Path(__file__).resolve().parent / "deepspeed" / f"{value}.json"
        return str(path)
    path = Path(value)
    if not path.is_file():
        raise ConfigError(
            f"deepspeed: '{value}' is neither a preset ({', '.join(DEEPSPEED_PRESETS)}) nor an existing JSON file"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConfigError(f"deepspeed: {path} is not valid JSON{where}: {getattr(exc, 'msg', exc)}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"deepspeed: {path} must hold a JSON object (DeepSpeed's config), got {type(config).__name__}")
    return str(path)


def init_distributed_if_launched() -> None:
    """Under torchrun / accelerate / deepspeed launchers on a machine without CUDA, start gloo before the trainer
    (DeepSpeed would otherwise ask for NCCL)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch

    if torch.cuda.is_available():
        return
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        import deepspeed

        _skip_shm_comm_build()
        deepspeed.init_distributed(dist_backend="gloo")


def zero_stage(args) -> int | None:
    """The ZeRO stage a run's TrainingArguments select, however DeepSpeed was switched on: `--deepspeed` (a preset
    or a JSON file, kept in `args.deepspeed`) or an accelerate config (`accelerate launch` with `distributed_type:
    DEEPSPEED` leaves `args.deepspeed` unset; TrainingArguments builds the plugin from the launcher's environment).
    None without DeepSpeed."""
    plugin = getattr(args, "deepspeed_plugin", None)
    return None if plugin is None else int(plugin.zero_stage)


def gather_whole_weights_on_save(args) -> None:
    """Under ZeRO-3, make every save write whole weights. Each rank holds only a shard of every parameter;
    transformers' `save_model` gathers them into a state dict only when the DeepSpeed config says
    `stage3_gather_16bit_weights_on_model_save`. Without it, it writes DeepSpeed's partitioned checkpoint and no
    model file at all, which is what an accelerate config gets unless it sets `zero3_save_16bit_model: true` (and
    any JSON config that leaves the key out). The gathered weights are in the dtype the run trains in (bf16 on a
    GPU with mixed precision, fp32 on a CPU)."""
    plugin = getattr(args, "deepspeed_plugin", None)
    if plugin is None or int(plugin.zero_stage) != 3:
        return
    plugin.deepspeed_config.setdefault("zero_optimization", {})["stage3_gather_16bit_weights_on_model_save"] = True


def deepspeed_record(args) -> dict[str, Any] | None:
    """What run.json says about DeepSpeed: the stage, offloading and where the config came from."""
    plugin = getattr(args, "deepspeed_plugin", None)
    if plugin is None:
        return None
    zero = plugin.deepspeed_config.get("zero_optimization", {})

    def device(key: str) -> str:
        return (zero.get(key) or {}).get("device", "none")

    return {"zero_stage": int(plugin.zero_stage), "offload_optimizer": device("offload_optimizer"),
            "offload_param": device("offload_param"),
            "config": args.deepspeed if args.deepspeed else "accelerate config"}


def prepare_deepspeed(args) -> None:
    """Call with a stage's TrainingArguments before it loads its model and builds its Trainer; does nothing without
    DeepSpeed (`zero_stage`: switched on by `--deepspeed` or by an accelerate config).

    DeepSpeed needs a process group before the model loads (ZeRO-3 partitions it in `from_pretrained`) and before
    `deepspeed.initialize`. Launched runs get theirs from `init_distributed_if_launched`. A plain single process has
    none: DeepSpeed would look for MPI (`No module named 'mpi4py'`), then ask for LOCAL_RANK. It gets what a
    one-process launcher gives: RANK/LOCAL_RANK 0, WORLD_SIZE 1, and a one-rank group on an in-memory store (no
    port to pick).

    Each stage's Trainer builds its own Accelerator; accelerate keeps the first one's DeepSpeed state for the process
    and refuses another plugin (`You cannot pass in a deepspeed_plugin when creating a second Accelerator`), so that
    state is dropped, as TrainingArguments does when it sets up devices; the process group and world size stay.

    Every save under ZeRO-3 then writes whole weights (`gather_whole_weights_on_save`)."""
    if zero_stage(args) is None:
        return
    gather_whole_weights_on_save(args)
    _init_process_group_for_deepspeed()
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)


def _init_process_group_for_deepspeed() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        init_distributed_if_launched()
        return
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        return
    for name in ("RANK", "LOCAL_RANK"):
        os.environ.setdefault(name, "0")
    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        os.environ.setdefault(name, "1")
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    import deepspeed

    if not torch.cuda.is_available():
        _skip_shm_comm_build()
    deepspeed.init_distributed(dist_backend=dist.get_backend())  # wraps the group above: no MPI discovery


def _skip_shm_comm_build() -> None:
    """DeepSpeed's process group on a CPU JIT-compiles a shared-memory all-reduce (about 100 s the first time on a
    machine, and it needs a C++ compiler) that only `inference_all_reduce`, for tensor-parallel inference, uses;
    training never calls it. DeepSpeed's table of buildable ops decides whether it is built; it is kept in the
    module so that edits to it persist (deepspeed/ops/__init__.py)."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def keep_used_weight_conversions(model) -> None:
    """Call before saving a model that may have been loaded under ZeRO-3. transformers' ZeRO-3 loader keeps every key
    conversion registered for the architecture to revert on save, not only those that matched the checkpoint as its
    plain loader does; reverting the unused ones writes keys such as `language_model.model.model.*` and
    `vision_tower.vision_model.*` (transformers maps them back on load; anything reading the file directly sees odd
    names). Keep the used ones."""
    for module in model.modules():
        conversions = getattr(module, "_weight_conversions", None)
        if conversions:
            module._weight_conversions = [c for c in conversions if c.was_used()]


def extra_trainables(model, zero3: bool) -> dict:
    """`align.models.freeze.extra_state_dict` as CPU tensors, ready to save: trained parameters a PEFT adapter file
    cannot hold (norms under `adapter`, bare tensors such as LLaVA-NeXT's image_newline under `lora`). Call it on
    every rank: under ZeRO-3 the trainable parameters (the adapter's size) are gathered for the copy, and only
    while gathered do they have the storage `extra_state_dict` tells them apart by (a sharded one would be dropped)."""
    from peft import PeftModel

    from align.models.freeze import extra_state_dict

    if not isinstance(model, PeftModel):
        return {}
    if not zero3:
        return {n: t.detach().contiguous().cpu() for n, t in extra_state_dict(model).items()}
    import deepspeed

    trainable = [p for p in model.parameters() if p.requires_grad]
    with deepspeed.zero.GatheredParameters(trainable, modifier_rank=None):
        return {n: t.detach().clone().contiguous().cpu() for n, t in extra_state_dict(model).items()}


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("align", "torch", "transformers", "trl", "peft", "deepspeed", "accelerate", "datasets"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def write_run_json(folder: str | Path, command: str, config: dict[str, Any], extra: dict[str, Any]) -> Path:
    """`run.json` beside the outputs: resolved config, versions, seed, git revision, results."""
    from align.files import atomic_write_text, current_command

    payload = {
        "command": command,
        "argv": current_command(),
        "config": config,
        "versions": package_versions(),
        "python": platform.python_version(),
        "git_revision": _git_revision(),
        **extra,
    }
    return atomic_write_text(Path(folder) / "run.json", json.dumps(payload, indent=2, default=str) + "\n")
