"""GRPO against PPO on the shapes colour task: the same SFT checkpoint, the same reward and the same number of
sampled answers (50 batches of 64) and optimizer steps (200), printed side by side: the mean reward of each batch
of answers (the reward curve), its first and last quarter, and seconds per optimizer step.

    python benchmarks/bench_grpo_vs_ppo.py [--seeds 0 1] [--threads 1] [--out DIR]

Each seed: a single-shape 64 px world (600 images), a small tiny LLaVA (0.93M parameters) after 240 SFT steps on
the colour questions, then `align ppo --config recipes/ppo/shapes_color.yaml` and `align grpo --config
recipes/grpo/shapes_color.yaml` from it, each in its own process. bf16 where CUDA has it, else fp32 on the CPU.
Run one benchmark at a time: two CPU-heavy jobs on two cores make both numbers meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _quarters(curve: list[float]) -> tuple[float, float]:
    q = max(1, len(curve) // 4)
    return sum(curve[:q]) / q, sum(curve[-q:]) / q


def _run(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command[:4])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="Keep the runs here (default: a temporary folder).")
    args = parser.parse_args()

    from align.data.io import write_jsonl
    from align.data.shapes import ShapesConfig, generate_shapes_world
    from align.models.tiny import build_tiny

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TRANSFORMERS_VERBOSITY": "error"}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        world = root / "world"
        generate_shapes_world(ShapesConfig(n=600, seed=1, image_size=64, max_objects=1, qa_per_image=4,
                                           eval_fraction=0.2), world)
        rows = [json.loads(line) for line in (world / "sft.jsonl").read_text().splitlines()]
        data = world / "colour_qa.jsonl"
        write_jsonl(data, [r for r in rows if "What color" in json.dumps(r["messages"][0])])
        base = build_tiny("llava", root / "base", seed=0, size="small")
        results = {}
        for seed in args.seeds:
            sft = root / f"sft-{seed}"
            _run([sys.executable, "-m", "align", "sft", "--model", str(base), "--data", str(data), "--output-dir",
                  str(sft), "--train", "all", "max_steps=240", "per_device_train_batch_size=16",
                  "learning_rate=1e-3", "lr_scheduler_type=cosine", "warmup_steps=8", f"seed={seed}",
                  "save_strategy=no", "disable_tqdm=true"], env)
            for method in ("ppo", "grpo"):
                out = root / f"{method}-{seed}"
                wall = _run([sys.executable, "-m", "align", method, "--config",
                             str(RECIPES / method / "shapes_color.yaml"), "--model", str(sft), "--data", str(data),
                             "--output-dir", str(out), f"seed={seed}", "disable_tqdm=true"], env)
                run = json.loads((out / "run.json").read_text())
                results[(method, seed)] = (run["reward_curve"], run["seconds_per_step"], wall)

    print(f"GRPO vs PPO, shapes colour task, 200 optimizer steps on 3200 sampled answers each "
          f"({'CUDA' if _cuda() else f'CPU, {args.threads} thread(s)'})")
    print(f"{'method':6} {'seed':>4} {'first quarter':>14} {'last quarter':>13} {'rise':>6} {'s/step':>7} "
          f"{'wall s':>7}")
    for (method, seed), (curve, per_step, wall) in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        first, last = _quarters(curve)
        print(f"{method:6} {seed:>4} {first:>14.3f} {last:>13.3f} {last - first:>+6.3f} {per_step:>7.3f} "
              f"{wall:>7.1f}")
    print("\nreward per batch of 64 answers (mean of 5 consecutive batches):")
    for (method, seed), (curve, _, _) in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        smooth = [sum(curve[i:i + 5]) / len(curve[i:i + 5]) for i in range(0, len(curve), 5)]
        print(f"{method:6} {seed:>4} " + " ".join(f"{v:.2f}" for v in smooth))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
