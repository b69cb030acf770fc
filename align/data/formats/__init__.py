"""Released dataset formats, one converter each, turned into records of the data contract (README, Data format).

`FORMATS` maps a format name to the columns every row of it has (how it is recognised, and what a refusal
names), how to convert a file's rows, and the record kind it makes. `align data convert --from NAME` runs one;
`--from auto` picks the format whose columns the file has (the most specific, when several fit). The SFT loader
also reads LLaVA conversation files directly (`detect_format`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from align.data.formats.llava import convert_llava, is_llava_format, load_llava
from align.errors import DataError, lookup
from align.registry import import_object


@dataclass(frozen=True)
class Format:
    fields: tuple[str, ...]  # columns every row of the format has
    convert: Callable[..., list[dict]] | str  # (records, path, image_root) -> Records; or "module:function"
    kind: str  # the record kind the conversion makes
    help: str = ""

    def detect(self, columns: Iterable[str]) -> bool:
        return set(self.fields) <= set(columns)

    def converter(self) -> Callable[..., list[dict]]:
        return import_object(self.convert) if isinstance(self.convert, str) else self.convert


_R = "align.data.formats.released:"
FORMATS: dict[str, Format] = {
    "rlhfv": Format(("text", "image"), _R + "convert_rlhfv", "preference",
                    help="RLHF-V (openbmb/RLHF-V-Dataset): text = JSON {question, chosen, rejected}; spans by diff"),
    "rlaifv": Format(("ds_name", "question", "chosen", "rejected", "image"), _R + "convert_rlaifv", "preference",
                     help="RLAIF-V (openbmb/RLAIF-V-Dataset): ds_name, question, chosen, rejected, image"),
    "vlfeedback": Format(("prompt", "img_path", "completions"), _R + "convert_vlfeedback", "source",
                         help="VLFeedback (MMInstruction/VLFeedback): rated completions -> sources for "
                              "build-pairs vlfeedback"),
    "povid": Format(("conversations", "rejected_conversations"), _R + "convert_povid", "preference",
                    help="POVID: conversations (preferred) and rejected_conversations, image"),
    "bpo": Format(("prompt", "image", "completions"), _R + "convert_bpo", "preference",
                  help="BPO (renjiepi/BPO_Instruct): completions [{score, response, type}] -> every ordered pair"),
    "hsa": Format(("id", "question", "chosen", "rejected"), _R + "convert_hsa", "preference",
                  help="HSA-DPO: id, question, chosen, rejected, chosen_score / rejected_score; image {id}.jpg"),
    "stic": Format(("image", "chosen", "rejected"), _R + "convert_stic", "preference",
                   help="STIC (stic-coco-preference-6k): chosen / rejected as [user, assistant] role/content lists"),
    "halva": Format(("question", "correct_answer_masked", "hallucinated_answer_masked"), _R + "convert_halva",
                    "preference", help="HALVA: <MASK> phrase </MASK> tags -> chosen_spans / rejected_spans"),
    "mdpo": Format(("img_path", "prompt", "chosen", "rejected"), _R + "convert_mdpo", "preference",
                   help="mDPO (fwnlp/mDPO-preference-data): templated prompt, chosen, rejected, img_path"),
    "hound": Format(("video", "prompt", "chosen", "rejected"), _R + "convert_hound", "preference",
                    help="LLaVA-Hound (sft_dpo_17k.jsonl): video frame folder, prompt, chosen, rejected"),
    "llava_rlhf": Format(("conversations", "output_1", "output_2", "preference"), _R + "convert_llava_rlhf",
                         "preference", help="LLaVA-RLHF human preferences: output_1 / output_2, preference 1 or 2"),
    "trl": Format(("images", "prompt", "chosen", "rejected"), _R + "convert_trl", "preference",
                  help="TRL's conversational vision preference data (trl-lib/rlaif-v)"),
    "sharegpt_pairs": Format(("conversations", "chosen", "rejected"), _R + "convert_sharegpt_pairs", "preference",
                             help="LLaMA-Factory ShareGPT pairs (e.g. Zhihui/VLFeedback): conversations, chosen, "
                                  "rejected, images"),
    "llava": Format(("conversations",), convert_llava, "sft",
                    help="LLaVA/ShareGPT-style JSON: id, image(s) or video, conversations [{from, value}]"),
}


def matching_formats(columns: Iterable[str]) -> list[str]:
    """The formats whose columns these rows have, most specific (most columns) first."""
    columns = set(columns)
    found = [name for name, fmt in FORMATS.items() if fmt.detect(columns)]
    return sorted(found, key=lambda name: -len(FORMATS[name].fields))


def detect_format(columns: Iterable[str]) -> str | None:
    """The name of the outside format whose columns these are (the most specific), or None."""
    found = matching_formats(columns)
    return found[0] if found else None


def choose_format(name: str, columns: Iterable[str], path: object) -> str:
    """The format to convert `path` with: `name`, checked against the file's columns, or (auto) the one the
    columns identify. A file of another format, or of none, is a DataError naming what it looks like."""
    columns = sorted(set(columns))
    found = matching_formats(columns)
    if name != "auto":
        fmt = lookup(FORMATS, "format", name)
        if fmt.detect(columns):
            return name
        missing = [f for f in fmt.fields if f not in columns]
        looks = f"it looks like {found[0]} (--from {found[0]})" if found else \
            f"its columns ({', '.join(columns[:8])}) match no known format"
        raise DataError(path, f"is not {name} data: it has no {', '.join(missing)}; {looks}")
    if not found:
        raise DataError(path, f"its columns ({', '.join(columns[:8])}) match no known format; known: "
                        f"{', '.join(FORMATS)} (pass --from NAME to see what one of them needs)")
    best = [f for f in found if len(FORMATS[f].fields) == len(FORMATS[found[0]].fields)]
    if len(best) > 1:
        raise DataError(path, f"its columns fit {' and '.join(best)} alike; pass --from with one of them")
    return found[0]


__all__ = ["FORMATS", "Format", "choose_format", "convert_llava", "detect_format", "is_llava_format", "load_llava",
           "matching_formats"]
