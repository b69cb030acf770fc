"""GRPO reward curves on the shapes world's RL tasks, counting and grounding, from one SFT checkpoint (the colour
task's is bench_grpo_vs_ppo.py's).

    python benchmarks/bench_grpo_shapes_tasks.py [--out runs/shapes-rl] [--seed 0] [--threads 1] [--tasks count grounding]

A 600-image 64 px world (`align data shapes`), a small tiny LLaVA (0.93M parameters) after SFT on the world's
conversations plus one grounding answer per train image (the box of the asked object in the family's grounding
format: the world's SFT data has no boxes), then `align grpo --config recipes/grpo/shapes_<task>.yaml` for each
task. Prints the mean reward of each generation batch (averaged over 5), the first and last quarter and the
seconds per step. The SFT model and the runs stay in --out (the recipes' `runs/shapes-rl/...` paths).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
RECIPE_OF = {"count": "shapes_count.yaml", "grounding": "shapes_grounding.yaml"}


def grounding_sft_rows(rl_rows: list[dict]) -> list[dict]:
    """rl_grounding rows -> SFT rows answering with the box as `<bbox>x0,y0,x1,y1</bbox>` in pixels, which
    `align sft` writes in the family's grounding format."""
    return [{"id": f"{r['id']}_sft", "images": r["images"],
             "messages": [*r["prompt"], {"role": "assistant", "content": [
                 {"type": "text", "text": "<bbox>{},{},{},{}</bbox>".format(*r["box"])}]}]} for r in rl_rows]


def _run(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(map(str, command[:4]))} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/shapes-rl"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tasks", nargs="*", default=list(RECIPE_OF), choices=list(RECIPE_OF))
    args = parser.parse_args()

    from align.data.io import read_jsonl, write_jsonl
    from align.data.shapes import ShapesConfig, generate_shapes_world
    from align.models.tiny import build_tiny

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TRANSFORMERS_VERBOSITY": "error"}
    root = args.out
    world = root / "world"
    if not (world / "world.json").is_file():
        generate_shapes_world(ShapesConfig(n=600, seed=1, image_size=64, eval_fraction=0.2), world)
    sft_data = world / "sft_with_boxes.jsonl"
    rows = read_jsonl(world / "sft.jsonl")[0] + grounding_sft_rows(read_jsonl(world / "rl_grounding.jsonl")[0])
    write_jsonl(sft_data, rows)
    sft = root / "sft"
    if not (sft / "run.json").is_file():
        base = build_tiny("llava", root / "base", seed=0, size="small")
        _run([sys.executable, "-m", "align", "sft", "--model", str(base), "--data", str(sft_data), "--output-dir",
              str(sft), "--train", "all", "max_steps=600", "per_device_train_batch_size=16", "learning_rate=1e-3",
              "lr_scheduler_type=cosine", "warmup_steps=20", f"seed={args.seed}", "save_strategy=no",
              "disable_tqdm=true"], env)
    print(f"GRPO on the shapes world's RL tasks from one SFT checkpoint (small tiny LLaVA, seed {args.seed})")
    for task in args.tasks:
        out = root / f"grpo-{task}"
        _run([sys.executable, "-m", "align", "grpo", "--config", str(RECIPES / "grpo" / RECIPE_OF[task]), "--model",
              str(sft), "--data", str(world / f"rl_{task}.jsonl"), "--output-dir", str(out), f"seed={args.seed}",
              "disable_tqdm=true", "--overwrite"], env)
        run = json.loads((out / "run.json").read_text())
        curve = run["reward_curve"]
        q = max(1, len(curve) // 4)
        smooth = [sum(curve[i:i + 5]) / len(curve[i:i + 5]) for i in range(0, len(curve), 5)]
        print(f"{task:10} first quarter {sum(curve[:q]) / q:.3f} -> last quarter {sum(curve[-q:]) / q:.3f}, "
              f"{run['seconds_per_step']:.3f} s/step, {len(curve)} generation batches")
        print(f"{'':10} " + " ".join(f"{v:.2f}" for v in smooth))


if __name__ == "__main__":
    main()
