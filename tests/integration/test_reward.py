"""`align reward` on tiny LLaVAs: held-out accuracy well above chance on shapes colour pairs, the saved reward
model reloads with the same scores, Fact-RLHF captions go into its prompt (and PPO refuses it without them)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

FAST = ["logging_steps=1", "save_strategy=no", "disable_tqdm=true"]


def colour_pairs(colour_world: Path, out: Path, seed: int = 0) -> tuple[Path, Path]:
    """(train, held-out) preference files: the true colour against another colour, on the world's colour
    questions; the held-out pairs are on images the train pairs never show."""
    from align.data.io import write_jsonl
    from align.data.shapes_vocab import COLORS

    rng = random.Random(seed)
    rows = [json.loads(line) for line in (colour_world / "colour_qa.jsonl").read_text().splitlines()]
    pairs = []
    for row in rows:
        truth = row["messages"][1]["content"][0]["text"]
        wrong = rng.choice([c.capitalize() for c in COLORS if c != truth.lower()])
        pairs.append({"id": row["id"], "images": row["images"],  # relative to the world: --image-root
                      "prompt": row["messages"][:1],
                      "chosen": [{"role": "assistant", "content": [{"type": "text", "text": truth}]}],
                      "rejected": [{"role": "assistant", "content": [{"type": "text", "text": wrong}]}]})
    cut = len(pairs) * 3 // 4
    write_jsonl(out / "train.jsonl", pairs[:cut])
    write_jsonl(out / "heldout.jsonl", pairs[cut:])
    return out / "train.jsonl", out / "heldout.jsonl"


@pytest.mark.slow
def test_reward_model_tells_the_true_colour_from_a_swapped_one(colour_world, colour_sft, run_cli, tmp_path):
    train, heldout = colour_pairs(colour_world, tmp_path)
    out = tmp_path / "rm"
    result = run_cli("reward", "--model", colour_sft(0), "--data", train, "--eval-data", heldout, "--output-dir",
                     out, "--image-root", colour_world, "--train", "all", "max_steps=150", "per_device_train_batch_size=16",
                     "learning_rate=1e-3", "eval_steps=150", *FAST)
    assert result.code == 0, result
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["eval_rows"] == len(heldout.read_text().splitlines())
    assert run["eval_accuracy"] >= 0.7, run["eval_accuracy"]  # chance is 0.5, measured 0.80; a tie is wrong
    info = json.loads((out / "scalar_head.json").read_text())
    assert info["kind"] == "reward" and info["family"] == "llava" and info["reward_prompt"] is None


def test_saved_reward_model_reloads_with_the_scores_it_trained_to(tiny_checkpoint, pairs, run_cli, tmp_path):
    from align.data.collate import ConversationEncoder
    from align.data.reward_pairs import load_reward_data
    from align.models.scalar_head import last_token_scores, load_scalar_head_model

    out = tmp_path / "rm"
    result = run_cli("reward", "--model", tiny_checkpoint("llava"), "--data", pairs / "first4.jsonl",
                     "--output-dir", out, "max_steps=2", "per_device_train_batch_size=2", "learning_rate=1e-2", *FAST)
    assert result.code == 0, result
    assert (out / "adapter_config.json").is_file()  # LoRA by default, as LLaVA-RLHF trains its reward model
    model, processor = load_scalar_head_model(out)
    assert model.head.weight.abs().sum() > 0  # the zero head trained
    data = load_reward_data(pairs / "first4.jsonl", processor, "llava", None, None, None, 2048)
    batch = ConversationEncoder(processor, "llava").encode(list(data.load_pair(0)), add_generation_prompt=False)
    with torch.no_grad():
        first = last_token_scores(model(**batch), batch["attention_mask"])
        again = last_token_scores(load_scalar_head_model(out)[0](**batch), batch["attention_mask"])
    torch.testing.assert_close(first, again)
    assert not torch.equal(first[0], first[1])


def _captions(pairs_file: Path, out: Path, world: Path | None = None, skip_last: bool = False) -> Path:
    """LLaVA-RLHF's image_to_caption.json layout, keyed by image file name: the pairs' images (all but the last
    row's with `skip_last`) and every image of `world`."""
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    keep = rows[:-1] if skip_last else rows
    mapping = {Path(r["images"][0]).name: [f"a picture {i}", "shapes on white"] for i, r in enumerate(keep)}
    for image in sorted((world / "images").iterdir()) if world else []:
        mapping.setdefault(image.name, ["shapes on white"])
    path = out / "captions.json"
    path.write_text(json.dumps(mapping))
    return path


def test_fact_rlhf_captions_join_the_reward_prompt_and_ppo_needs_them(tiny_checkpoint, pairs, shapes_world,
                                                                      run_cli, tmp_path):
    from align.data.reward_pairs import load_reward_data
    from align.models.load import load_processor

    captions = _captions(pairs / "first4.jsonl", tmp_path, world=shapes_world)
    data = load_reward_data(pairs / "first4.jsonl", load_processor(tiny_checkpoint("llava")), "llava", None,
                            "Judge it.{factual_prompt}", str(captions), 2048)
    turn = data.load_pair(1)[0].messages[-1]
    assert turn["role"] == "user" and "a picture 1" in turn["content"][0]["text"]
    assert turn["content"][0]["text"].startswith("Judge it.\nThe response must be supported by")

    rm = tmp_path / "rm"
    result = run_cli("reward", "--model", tiny_checkpoint("llava"), "--data", pairs / "first4.jsonl", "--output-dir",
                     rm, "--fact-captions", captions, "reward_prompt=fact_rlhf", "max_steps=1",
                     "per_device_train_batch_size=2", *FAST)
    assert result.code == 0, result
    assert json.loads((rm / "scalar_head.json").read_text())["fact_captions"] is True

    ppo = ["ppo", "--model", tiny_checkpoint("llava"), "--data", shapes_world / "sft.jsonl", "--reward-model", rm,
           "--output-dir", tmp_path / "ppo", "max_steps=1", "rollout_batch_size=2", "per_device_train_batch_size=2",
           "ppo_epochs=1", "max_new_tokens=4", *FAST]
    refused = run_cli(*ppo)
    assert refused.code == 2 and "trained with fact captions" in refused.err
    done = run_cli(*ppo, f"fact_captions={captions}")
    assert done.code == 0, done
    run = json.loads((tmp_path / "ppo" / "run.json").read_text())
    assert run["reward_model"] == str(rm) and run["value_model_init"] == str(rm)
    assert any("rewards/reward_model" in e for e in run["log_history"])


def test_reward_errors_name_the_row_or_the_setting(tiny_checkpoint, pairs, run_cli, tmp_path):
    captions = _captions(pairs / "first4.jsonl", tmp_path, skip_last=True)
    missing = run_cli("reward", "--model", tiny_checkpoint("llava"), "--data", pairs / "first4.jsonl",
                      "--output-dir", tmp_path / "a", "--fact-captions", captions, "reward_prompt=fact_rlhf", *FAST)
    assert missing.code == 2 and "row 4" in missing.err and "no fact captions" in missing.err
    no_prompt = run_cli("reward", "--model", tiny_checkpoint("llava"), "--data", pairs / "first4.jsonl",
                        "--output-dir", tmp_path / "b", "--fact-captions", captions, *FAST)
    assert no_prompt.code == 2 and "set reward_prompt" in no_prompt.err


def test_resumed_reward_model_ends_where_the_uninterrupted_run_ends(tiny_checkpoint, pairs, run_cli, tmp_path):
    import shutil

    from safetensors.torch import load_file

    def run(out, *extra):
        result = run_cli("reward", "--model", tiny_checkpoint("llava"), "--data", pairs / "first4.jsonl",
                         "--output-dir", out, "max_steps=4", "per_device_train_batch_size=2", "learning_rate=1e-2",
                         "logging_steps=1", "disable_tqdm=true", *extra)
        assert result.code == 0, result

    run(tmp_path / "whole", "save_steps=2")
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "whole" / "checkpoint-2", resumed / "checkpoint-2")
    run(resumed, "--resume", "save_strategy=no")
    assert json.loads((resumed / "run.json").read_text())["resumed_from"] == str(resumed / "checkpoint-2")
    for name in ("adapter_model.safetensors", "scalar_head.safetensors"):
        whole, again = load_file(str(tmp_path / "whole" / name)), load_file(str(resumed / name))
        for key in whole:
            torch.testing.assert_close(again[key], whole[key], msg=f"{name}: {key}")


def test_gradient_accumulation_equals_the_larger_batch(tiny_checkpoint, pairs, run_cli, tmp_path):
    """One step on 4 pairs = one step of 2 x 2 accumulated (centring off: it is a batch-level term). Plain SGD
    without clipping, so the update is proportional to the gradient: Adam's first step would hide a wrong scale."""
    from safetensors.torch import load_file

    def run(out, *extra):
        result = run_cli("reward", "--model", tiny_checkpoint("llava"), "--data", pairs / "first4.jsonl",
                         "--output-dir", out, "max_steps=1", "learning_rate=1e-2", "center_coef=0", "lora_dropout=0",
                         "dataloader_drop_last=true", "seed=5", "optim=sgd", "max_grad_norm=0", *FAST, *extra)
        assert result.code == 0, result

    run(tmp_path / "big", "per_device_train_batch_size=4")
    run(tmp_path / "acc", "per_device_train_batch_size=2", "gradient_accumulation_steps=2")
    for name in ("adapter_model.safetensors", "scalar_head.safetensors"):
        big, acc = load_file(str(tmp_path / "big" / name)), load_file(str(tmp_path / "acc" / name))
        for key in big:
            torch.testing.assert_close(acc[key], big[key], rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")


def test_align_eval_reward_pairs_scores_a_saved_reward_model(tiny_checkpoint, pairs, run_cli, tmp_path):
    from align.eval.reward_pairs import evaluate_reward_model

    rm = tmp_path / "rm"
    trained = run_cli("reward", "--model", tiny_checkpoint("llava"), "--data", pairs / "first4.jsonl",
                      "--eval-data", pairs / "first4.jsonl", "--output-dir", rm, "max_steps=2",
                      "per_device_train_batch_size=2", "learning_rate=1e-2", *FAST)
    assert trained.code == 0, trained
    result = run_cli("eval", "reward-pairs", "--model", rm, "--pairs", pairs / "first4.jsonl", "--out",
                     tmp_path / "eval", "--batch-size", 3)
    assert result.code == 0, result
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["benchmark"] == "reward-pairs" and metrics["counts"]["pairs"] == 4
    # The same pairs through the trainer's evaluation (held-out = these 4) give the same accuracy.
    assert metrics["metrics"]["accuracy"] == json.loads((rm / "run.json").read_text())["eval_accuracy"]
    direct = evaluate_reward_model(rm, pairs / "first4.jsonl", batch_size=4).metrics
    assert direct["mean_margin"] == pytest.approx(metrics["metrics"]["mean_margin"], abs=1e-5)
    assert direct["chosen_score"] - direct["rejected_score"] == pytest.approx(direct["mean_margin"], abs=1e-6)
