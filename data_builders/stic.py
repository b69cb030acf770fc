"""STIC (Deng et al., 2024) stage-1 pairs: the model describes its own images well and badly.

chosen   = the model's answer to a detailed step-by-step description prompt on the clean image (temperature 0.2);
rejected = with probability 0.5 a hallucination-inducing prompt on the clean image, otherwise a plain description
           prompt on a corrupted image (shorter side 20 px, or colour jitter brightness 0.5 / hue 0.3, each with
           probability 0.5).
The stored prompt for both sides is a sampled plain prompt, as in the paper's data. Unlike the released
generate_pref.py, the corruption is really applied (that script forgets to pass `image_corruption=True`, so half
of its "rejected" answers come from the clean image); every row records its branch, prompt and corruption.
The prompts are align's own wording of the paper's prompt types (the originals are not reproduced here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from align.seeds import derive_seed
from data_builders.base import Builder, Built, Source, user_prompt
from data_builders.build_settings import BuildConfig

DETAILED_PROMPT = (
    "Describe the image step by step. First name the main subjects and what they are doing. Then describe the "
    "setting, whether indoor or outdoor, the mood, the colours and the composition. Finally mention any "
    "symbolic details and what the image as a whole conveys."
)
PLAIN_PROMPTS = (
    "Describe this image.",
    "What is in this image?",
    "Give a description of the image.",
    "Describe the scene in the image.",
    "Tell me what you see in this picture.",
    "Write a short description of this image.",
    "What does this image show?",
    "Summarize the content of this image.",
)
HALLUCINATION_PROMPTS = (
    "Describe the image with imaginative objects that may exist in the scene.",
    "Enrich the description by adding hypothetical objects or characters that could be part of the scene.",
    "Describe the image, adding details that are not visible but could plausibly be there.",
    "Describe the image as if more objects were present than can be seen.",
    "Tell a vivid story about this image, inventing things around the visible objects.",
    "Describe the image, including objects that usually appear in such scenes even if they are not shown.",
    "Describe the image and speculate about objects hidden outside the frame as if they were visible.",
    "Describe this image with creative additions that make the scene richer.",
)


@dataclass
class SticConfig(BuildConfig):
    hallucination_prob: float = field(
        default=0.5, metadata={"help": "Share of rejected answers from a hallucination prompt (else a corrupted image)."}
    )
    downscale_prob: float = field(
        default=0.5, metadata={"help": "Among corrupted images, the share downscaled to 20 px (else colour jitter)."}
    )
    downscale_size: int = field(default=20, metadata={"help": "Shorter side of the downscaled image, in pixels."})
    jitter_brightness: float = field(default=0.5, metadata={"help": "ColorJitter brightness."})
    jitter_hue: float = field(default=0.3, metadata={"help": "ColorJitter hue."})
    chosen_temperature: float = field(default=0.2, metadata={"help": "Sampling temperature of the chosen answer."})
    rejected_temperature: float = field(default=0.2, metadata={"help": "Sampling temperature of the rejected one."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Longest generated answer (the paper: 1024)."})


class SticBuilder(Builder):
    name = "stic"
    config_cls = SticConfig
    needs_model = True

    def build(self, sources: list[Source], chunk_seed: int) -> list[Built]:
        from align.data.image_corruptions import apply_corruption

        c: SticConfig = self.config  # type: ignore[assignment]
        plans = [self._plan(s) for s in sources]
        clean = [s.load_images() for s in sources]
        rejected_images = []
        for source, plan, images in zip(sources, plans, clean, strict=True):
            if plan["branch"] == "hallucination_prompt":
                rejected_images.append(images)
                continue
            name, params = plan["corruption"]
            corrupted, records = apply_corruption(name, images, seed=derive_seed(c.seed, "stic", source.id),
                                                  **params)
            plan["corruption_record"] = records
            rejected_images.append(corrupted)
        gen = self.generator
        chosen = gen.generate([user_prompt(DETAILED_PROMPT, len(i)) for i in clean], clean, seed=chunk_seed,
                              max_new_tokens=c.max_new_tokens, temperature=c.chosen_temperature, top_p=c.top_p)
        rejected = gen.generate([user_prompt(p["rejected_prompt"], len(i)) for p, i in zip(plans, clean,
                                                                                            strict=True)],
                                rejected_images, seed=chunk_seed + 1, max_new_tokens=c.max_new_tokens,
                                temperature=c.rejected_temperature, top_p=c.top_p)
        built = []
        for source, plan, good, bad in zip(sources, plans, chosen, rejected, strict=True):
            if not good or not bad:
                built.append(Built(skipped="empty generation"))
                continue
            if good == bad:
                built.append(Built(skipped="identical answers"))
                continue
            meta = {"branch": plan["branch"], "chosen_prompt": DETAILED_PROMPT,
                    "rejected_prompt": plan["rejected_prompt"], "image_corruption": plan["branch"] != "hallucination_prompt",
                    "corruption": plan.get("corruption_record")}
            built.append(Built([self.pair(source, user_prompt(plan["stored_prompt"], len(source.record["images"])),
                                          good, bad, "stic", meta)]))
        return built

    def _plan(self, source: Source) -> dict:
        """This row's random choices, from its own stream: stored prompt, branch, corruption."""
        c: SticConfig = self.config  # type: ignore[assignment]
        rng = source.rng
        plan = {"stored_prompt": rng.choice(PLAIN_PROMPTS)}
        if rng.random() < c.hallucination_prob:
            plan.update(branch="hallucination_prompt", rejected_prompt=rng.choice(HALLUCINATION_PROMPTS))
        else:
            plan.update(branch="corrupted_image", rejected_prompt=rng.choice(PLAIN_PROMPTS))
            if rng.random() < c.downscale_prob:
                plan["corruption"] = ("downscale", {"size": c.downscale_size})
            else:
                plan["corruption"] = ("color_jitter", {"brightness": c.jitter_brightness, "hue": c.jitter_hue})
        return plan
