"""`align sft` step time per tiny family: the family's natural policy, batch 4, on the shapes world.

    python benchmarks/sft_step.py [--families llava qwen2_vl ...] [--steps 20] [--threads 1]

Prints, per family, the policy, trainable/total parameters, and seconds per optimizer step as the Trainer measures
it (train_runtime / steps: collation, forward, backward and AdamW included), and the row preparation time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    import torch

    from align.data.shapes import ShapesConfig, generate_shapes_world
    from align.models.tiny import TINY_BUILDERS, build_tiny
    from align.train.sft.run import run_sft
    from align.train.sft.settings import AlignSFTConfig

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--families", nargs="*", default=sorted(TINY_BUILDERS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    print(f"{'family':18} {'policy':18} {'trainable':>10} {'total':>10} {'s/step':>8} {'prep s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "shapes"
        generate_shapes_world(ShapesConfig(n=40, seed=0, image_size=64), world)
        for family in args.families:
            base = build_tiny(family, Path(tmp) / family)
            out = Path(tmp) / f"out-{family}"
            config = AlignSFTConfig(model=str(base), data=str(world / "sft.jsonl"), output_dir=str(out),
                                    per_device_train_batch_size=4, max_steps=args.steps, learning_rate=1e-3,
                                    max_length=512, save_strategy="no", logging_steps=args.steps,
                                    disable_tqdm=True)
            start = time.perf_counter()
            run_sft(config, progress=False)
            wall = time.perf_counter() - start
            run = json.loads((out / "run.json").read_text())
            step_s = run["metrics"]["train_runtime"] / args.steps
            model_total, trainable = _counts(out, family, run["policy"])
            prep = wall - run["metrics"]["train_runtime"]
            print(f"{family:18} {run['policy']:18} {trainable:>10,} {model_total:>10,} {step_s:>8.3f} {prep:>7.1f}")


def _counts(path: Path, family: str, policy: str) -> tuple[int, int]:
    from align.models.freeze import apply_train_policy
    from align.models.load import load_model_and_processor

    model = apply_train_policy(load_model_and_processor(path, dtype="float32")[0], family, policy)
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


if __name__ == "__main__":
    main()
