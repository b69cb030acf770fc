"""The steps every training run shares (sft, dpo, reward, ppo), as public helpers:

    run = TrainingRun.begin(cfg, "dpo", resume, progress)      # required settings, --resume of a finished run
    if run.finished: return run.output_dir
    run.prepare(cfg)                                            # DeepSpeed, denormals, seed
    model, processor, family = load_starting_model(cfg.model, cfg)
    ... data, trainable-part policy, trainer ...
    result, checkpoint = run.train(trainer, "dpo")              # newest complete checkpoint, start record, progress
    run.finish(trainer, {...})                                  # weights or adapter, then run.json (complete)

What a command adds between these steps is its own (data, trainer, record); each workflow's `run.py` reads as
that sequence.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.distributed import is_main_process, wait_for_everyone
from align.errors import ConfigError
from align.train.common import write_run_json
from align.train.run_state import check_resume, last_complete_checkpoint, start_record


def require_settings(cfg, keys: tuple[str, ...] = ("model", "data", "output_dir")) -> None:
    """A ConfigError naming the first of `keys` that `cfg` leaves unset, with where to set it."""
    for key in keys:
        if not getattr(cfg, key, None):
            raise ConfigError(f"{key} is required (--{key.replace('_', '-')} or `{key}:` in the recipe)")


@dataclass
class TrainingRun:
    """One training run's output folder, resolved settings and switches."""

    command: str
    output_dir: Path
    settings: dict[str, Any]  # as resolved, before the trainer fills some fields in (run.json's `config`)
    resume: bool = False
    progress: bool = True
    finished: bool = False  # --resume found this run complete: nothing to do
    main: bool = field(default_factory=is_main_process)

    @classmethod
    def begin(cls, cfg, command: str, resume: bool = False, progress: bool = True,
              required: tuple[str, ...] = ("model", "data", "output_dir"), output_dir: str | Path | None = None,
              ) -> TrainingRun:
        """Check the required settings; with `resume`, a run in the folder with other settings is refused and a
        finished one is marked `finished`."""
        from align.resolve import config_to_dict

        require_settings(cfg, required)
        out = Path(output_dir if output_dir is not None else cfg.output_dir)
        settings = config_to_dict(cfg)
        run = cls(command, out, settings, resume, progress)
        run.finished = bool(resume and check_resume(out, settings))
        return run

    def prepare(self, cfg) -> None:
        """Before the model loads: DeepSpeed (ZeRO-3 partitions the model while it loads), flushed denormals (tiny
        models slow down tenfold without), the seed."""
        import torch
        from transformers import set_seed

        from align.train.common import prepare_deepspeed

        prepare_deepspeed(cfg)
        self.main = is_main_process()
        torch.set_flush_denormal(True)
        set_seed(cfg.seed)

    @property
    def show(self) -> bool:
        """Whether this process prints the run's tables and bars."""
        return self.main and self.progress

    def train(self, trainer, label: str):
        """`trainer.train()` from the newest complete checkpoint (with resume), after the start record; returns
        (TrainOutput, the checkpoint resumed from or None)."""
        from align.train.progress import training_progress

        checkpoint = last_complete_checkpoint(self.output_dir) if self.resume else None
        start_record(self.output_dir, self.command, self.settings)
        with training_progress(trainer, label, enabled=self.progress):
            result = trainer.train(resume_from_checkpoint=checkpoint)
        return result, checkpoint

    def finish(self, trainer, record: dict[str, Any]) -> Path:
        """Save the model (or adapter), check that what was written holds whole weights, and then write `run.json`
        with `complete: true`, how DeepSpeed ran and `record`."""
        from align.train.common import deepspeed_record

        save_final(trainer, self.output_dir)
        if self.main:
            deepspeed = deepspeed_record(trainer.args)
            write_run_json(self.output_dir, self.command, self.settings,
                           {"complete": True, **({"deepspeed": deepspeed} if deepspeed else {}), **record})
        return self.output_dir


def load_starting_model(path: str, cfg):
    """(model, processor, family) of the checkpoint a run starts from, in `cfg`'s dtype and attention."""
    from align.models.families import family_of
    from align.models.load import load_model_and_processor
    from align.models.zero3_images import encode_images_on_every_rank, zero3_partitioned_run
    from align.train.common import keep_used_weight_conversions

    model, processor = load_model_and_processor(path, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation)
    keep_used_weight_conversions(model)  # every save, checkpoints included, keys the weights as the loaded file did
    family = family_of(model.config)
    if zero3_partitioned_run():  # micro-batches without images must not leave a rank out of the vision collectives
        encode_images_on_every_rank(model, processor, family)
    return model, processor, family


def natural_policy(family: str) -> str:
    """The trainable-part policy a family trains by default (its paper's regime)."""
    from align.models.families import get_family

    return get_family(family).natural_policy


def save_final(trainer, output_dir: Path) -> None:
    """Model (or adapter) + processor into a temporary folder, then moved into `output_dir` on the main rank.
    Every rank takes part in the saving: under ZeRO-3 each holds a shard of the weights, gathered here."""
    from align.files import remove_stale_temporaries
    from align.train.common import extra_trainables, keep_used_weight_conversions

    remove_stale_temporaries(output_dir / "final")  # `.final.tmp-PID` of a process killed while it saved
    tmp = output_dir / f".final.tmp-{os.getpid() if trainer.args.world_size == 1 else 'dist'}"
    keep_used_weight_conversions(trainer.model)
    trainer.save_model(str(tmp))
    zero3 = trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
    extra = extra_trainables(trainer.model, zero3)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        if extra:
            from safetensors.torch import save_file

            from align.models.freeze import EXTRA_WEIGHTS

            save_file(extra, str(tmp / EXTRA_WEIGHTS))
        for entry in tmp.iterdir():
            target = output_dir / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
        tmp.rmdir()
    trainer.accelerator.wait_for_everyone()
    check_saved_weights(output_dir)


def check_saved_weights(folder: Path) -> None:
    """A ModelError unless `folder` holds weights a loader can use: a model (`model.safetensors`, or the shards its
    index lists) or a PEFT adapter, and no empty tensor in any weights file (the rank-local remains of ZeRO-3
    shards). A run that fails this is not marked complete."""
    from align.errors import ModelError
    from align.models.saved_weights import weights_problem

    problem = weights_problem(folder)
    if problem:
        raise ModelError(f"{folder}: training finished but {problem}; the run is not marked complete")


def loadable(folder: Path) -> str:
    """A folder a model loader takes: `folder` itself, or its adapter merged into the base (once, in
    `folder/merged`)."""
    if not (folder / "adapter_config.json").is_file():
        return str(folder)
    merged = folder / "merged"
    if not (merged / "config.json").is_file():
        from align.models.load import zero3_off
        from align.models.merge import merge_adapter

        if is_main_process():  # one writer; under ZeRO-3 the merge loads whole weights
            with zero3_off():
                merge_adapter(folder, merged)
        wait_for_everyone()
    return str(merged)
