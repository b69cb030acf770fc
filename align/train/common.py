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
    return str(path)


def init_distributed_if_launched() -> None:
    """Under torchrun / accelerate / deepspeed launchers on a machine without CUDA, start gloo before the trainer
    (DeepSpeed would otherwise ask for NCCL)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch

    if torch.cuda.is_available():
        return
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized():
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


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
    from align.data.io import atomic_write_text, current_command

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
