"""A saved reward model (`align reward`) scored on preference pairs: how often the chosen response scores
strictly higher (a tie is wrong), the mean margin and both sides' mean scores. The pairs are read and encoded as
in training, with the model's own reward prompt (and, for a Fact-RLHF model, its captions file)."""

from __future__ import annotations

from pathlib import Path

from align.errors import ConfigError
from align.eval.common import EvalResult


def evaluate_reward_model(model_dir: str | Path, pairs: str | Path, image_root: str | Path | None = None,
                          fact_captions: str | Path | None = None, batch_size: int = 16,
                          progress: bool = True) -> EvalResult:
    import torch


    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")

    from align.data.collate import ConversationEncoder
    from align.data.reward_pairs import RewardCollator, load_reward_data
    from align.models.scalar_head import last_token_scores, load_scalar_head_model

    model, processor = load_scalar_head_model(model_dir)
    if model.info.get("kind") != "reward":
        raise ConfigError(f"{model_dir} is a {model.info.get('kind')} model, not a reward model")
    if model.info.get("fact_captions") and not fact_captions:
        raise ConfigError(f"{model_dir} was trained with fact captions in its reward prompt; pass the same file as "
                          "fact_captions=FILE")
    data = load_reward_data(pairs, processor, model.family, image_root, model.info.get("reward_prompt"),
                            str(fact_captions) if fact_captions else None, max_length=None)
    collate = RewardCollator(ConversationEncoder(processor, model.family), {"eval": data})
    model.eval()
    chosen, rejected = [], []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            rows = [{"row": r, "split": "eval"} for r in range(start, min(start + batch_size, len(data)))]
            batch = collate(rows)
            scores = last_token_scores(model(**batch), batch["attention_mask"])  # [2b]: chosen first
            chosen += scores[:len(rows)].tolist()
            rejected += scores[len(rows):].tolist()
    n = len(chosen)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    metrics = {"accuracy": sum(m > 0 for m in margins) / n, "mean_margin": sum(margins) / n,
               "chosen_score": sum(chosen) / n, "rejected_score": sum(rejected) / n}
    return EvalResult("reward-pairs", metrics, counts={"pairs": n, "ties": sum(m == 0 for m in margins)})
