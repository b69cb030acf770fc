"""Seconds per PPO step on the shapes colour task: how long a rollout (generation + policy, reference and critic
passes + rewards) and a minibatch update take, for a tiny LLaVA of each width.

    python benchmarks/bench_ppo.py [--sizes tiny small] [--steps 40] [--threads 1] [--rollout 64] [--minibatch 32]

Each run is `align ppo` (LoRA policy, projector+llm, as chosen by --train) from the random checkpoint on a
single-shape 64 px world, in its own process; the figures come from its run.json. Run one benchmark at a time:
two CPU-heavy jobs on two cores make both numbers meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="*", default=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rollout", type=int, default=64)
    parser.add_argument("--minibatch", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--train", default="projector+llm")
    args = parser.parse_args()

    from transformers.utils import logging as hf_logging

    from align.data.io import write_jsonl
    from align.data.shapes import ShapesConfig, generate_shapes_world
    from align.models.tiny import build_tiny

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TRANSFORMERS_VERBOSITY": "error"}
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        generate_shapes_world(ShapesConfig(n=600, seed=1, image_size=64, max_objects=1, qa_per_image=4,
                                           eval_fraction=0.2), world)
        rows = [json.loads(line) for line in (world / "sft.jsonl").read_text().splitlines()]
        write_jsonl(world / "colour_qa.jsonl", [r for r in rows if "What color" in json.dumps(r["messages"][0])])
        print(f"{'size':6} {'params':>9} {'s/step':>7} {'rollout s':>10} {'update s/step':>14} "
              f"(rollout {args.rollout}, minibatch {args.minibatch}, {args.max_new_tokens} new tokens, "
              f"{args.threads} thread(s), train={args.train})")
        for size in args.sizes:
            base = build_tiny("llava", Path(tmp) / f"base-{size}", size=size)
            out = Path(tmp) / f"ppo-{size}"
            command = [sys.executable, "-m", "align", "ppo", "--model", str(base), "--data",
                       str(world / "colour_qa.jsonl"), "--reward-func", "align.train.ppo.rewards:shapes_color",
                       "--output-dir", str(out), "--train", args.train, f"max_steps={args.steps}",
                       f"rollout_batch_size={args.rollout}", f"per_device_train_batch_size={args.minibatch}",
                       f"max_new_tokens={args.max_new_tokens}", "save_strategy=no", "disable_tqdm=true",
                       "logging_steps=1000"]
            subprocess.run(command, env=env, check=True, capture_output=True)
            run = json.loads((out / "run.json").read_text())
            rollouts = run["rollout_seconds"]
            total = run["metrics"]["train_runtime"]
            steps = run["global_step"]
            update = (total - sum(rollouts)) / steps
            from align.models.load import load_model_and_processor

            model = load_model_and_processor(base, dtype="float32")[0]
            params = sum(p.numel() for p in model.parameters())
            print(f"{size:6} {params:>9,} {total / steps:>7.3f} {sum(rollouts) / len(rollouts):>10.2f} "
                  f"{update:>14.3f}")


if __name__ == "__main__":
    main()
