"""Converters for the released preference datasets of the papers align implements, one function each:
`(records, path, image_root) -> Records` of the data contract. Field names follow each paper's own loader
(docs/data-formats.md lists them with the loaders they come from). Image and video placeholders are removed from
the text; the images go where the family's chat template puts them (image items in the first user turn).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import combinations
from pathlib import Path
from typing import Any

from align.data.diff import replaced_spans
from align.data.formats.common import (
    Where,
    assistant_turn,
    convert_rows,
    image_values,
    json_field,
    number_of,
    row_id,
    strip_placeholders,
    text_of,
    user_turn,
)
from align.data.io import Records

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _pair(rid: str, images: list, prompt: list[dict], chosen: str, rejected: str, method: str, **extra) -> dict:
    return {"id": rid, "images": images, "prompt": prompt, "chosen": assistant_turn(chosen),
            "rejected": assistant_turn(rejected), **extra, "method": method}


def _simple(question: str, images: list) -> list[dict]:
    return user_turn(question, len(images))


def _each(records, path, image_root, convert, kind="preference") -> Records:
    return convert_rows(records, path, convert, kind, image_root)


# ---- RLHF-V, RLAIF-V, HSA-DPO: question / chosen / rejected


def convert_rlhfv(records, path=None, image_root=None) -> Records:
    """openbmb/RLHF-V-Dataset: `text` is a JSON string {question, chosen (corrected), rejected (original)} (a
    list [question, chosen, rejected] in Muffin's old TSV dumps); `image` embedded. The corrected segments are
    marked on both sides by the word-level diff (`align.data.diff`), ready for `--variant ddpo`."""

    def convert(row, where: Where):
        text = json_field(row, "text", where)
        if isinstance(text, list) and len(text) >= 3:
            text = {"question": text[0], "chosen": text[1], "rejected": text[2]}
        if not isinstance(text, Mapping):
            raise where.fail("expected a JSON object {question, chosen, rejected}", field="text")
        question, chosen, rejected = (text_of(text, k, Where(where.path, where.row)) for k in
                                      ("question", "chosen", "rejected"))
        images = image_values(row.get("image"), where, "image")
        # [] on both sides: a correction that only inserted or deleted (Muffin weighs no token of it)
        chosen_spans, rejected_spans = replaced_spans(rejected, chosen)
        return [_pair(row_id(row, where, "idx", "id"), images, _simple(question, images), chosen, rejected,
                      "rlhfv", chosen_spans=[list(s) for s in chosen_spans],
                      rejected_spans=[list(s) for s in rejected_spans])]

    return _each(records, path, image_root, convert)


def convert_rlaifv(records, path=None, image_root=None) -> Records:
    """openbmb/RLAIF-V-Dataset: plain question / chosen / rejected columns, `image` embedded."""

    def convert(row, where):
        images = image_values(row.get("image"), where, "image")
        return [_pair(row_id(row, where, "idx", "id"), images, _simple(text_of(row, "question", where), images),
                      text_of(row, "chosen", where), text_of(row, "rejected", where), "rlaifv")]

    return _each(records, path, image_root, convert)


def convert_hsa(records, path=None, image_root=None) -> Records:
    """WenyiXiao/HSA-DPO preference JSONL: id, question, chosen, rejected and the severity weights
    `rejected_score` (and `chosen_score`), kept when present (HSA-DPO's loader takes 1.0 for a missing one;
    `--variant hsa` refuses rows without them rather than assume). The image is `{id}.jpg` under the image root
    (the unpacked hsa_dpo_imgs), or the row's `image` when it has one."""

    def convert(row, where):
        rid = row_id(row, where)
        images = image_values(row.get("image") or f"{rid}.jpg", where, "image")
        extra = {k: number_of(row, k, where) for k in ("chosen_score", "rejected_score") if row.get(k) is not None}
        return [_pair(rid, images, _simple(text_of(row, "question", where), images),
                      text_of(row, "chosen", where), text_of(row, "rejected", where), "hsa", **extra)]

    return _each(records, path, image_root, convert)


# ---- conversation-shaped releases


def _last_answer(turns: Any, where: Where, field: str) -> str:
    if not isinstance(turns, list) or not turns or not isinstance(turns[-1], Mapping):
        raise where.fail("expected a list of turns ending with the answer", field=field)
    last = turns[-1]
    text = last.get("value", last.get("content"))
    if not isinstance(text, str) or not text.strip():
        raise where.fail("the last turn has no text", field=f"{field}[{len(turns) - 1}]")
    return text


def _context(turns: Any, where: Where, field: str, n_images: int) -> list[dict]:
    """Turns before the answer -> prompt messages in the contract (the images in the first user turn)."""
    if not isinstance(turns, list) or not turns:
        raise where.fail("expected a non-empty list of turns", field=field)
    messages, placed = [], False
    for k, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise where.fail(f"expected a turn {{from, value}}, got {type(turn).__name__}", field=f"{field}[{k}]")
        role = ROLES.get(str(turn.get("from", turn.get("role"))))
        text = turn.get("value", turn.get("content"))
        if role is None or not isinstance(text, str):
            raise where.fail("expected from/value (or role/content) with a known role", field=f"{field}[{k}]")
        if role == "user" and not placed:
            messages += user_turn(text, n_images)
            placed = True
        else:
            messages.append({"role": role, "content": [{"type": "text", "text": strip_placeholders(text)}]})
    if messages[-1]["role"] != "user":
        raise where.fail("the context must end with a user turn", field=field)
    return messages


def convert_povid(records, path=None, image_root=None) -> Records:
    """YiyangAiLab/POVID_preference_data_for_VLLMs: `conversations` ends with the preferred answer,
    `rejected_conversations` with the hallucinated one; `image` relative to the image root (COCO train2014)."""

    def convert(row, where):
        images = image_values(row.get("image"), where, "image")
        prompt = _context(row["conversations"][:-1], where, "conversations", len(images))
        return [_pair(row_id(row, where), images, prompt, _last_answer(row["conversations"], where, "conversations"),
                      _last_answer(row["rejected_conversations"], where, "rejected_conversations"), "povid")]

    return _each(records, path, image_root, convert)


def convert_llava_rlhf(records, path=None, image_root=None) -> Records:
    """zhiqings/LLaVA-Human-Preference-10K: the context is `conversations` without its last (gpt) turn; the
    human-preferred one of `output_1` / `output_2` (`preference` 1 or 2) is chosen. `hallucination` goes to meta."""
    import json

    def convert(row, where):
        turns = row["conversations"]
        if isinstance(turns, list) and len(turns) == 1 and isinstance(turns[0], list):
            turns = turns[0]  # LLaVA-RLHF's loader accepts the conversation wrapped in one more list
        preference = row.get("preference")
        if preference not in (1, 2, "1", "2"):
            raise where.fail(f"expected 1 or 2, got {preference!r}", field="preference")
        first = str(preference) == "1"
        outputs = [text_of(row, "output_1", where), text_of(row, "output_2", where)]
        images = image_values(row.get("image"), where, "image")
        answered = isinstance(turns, list) and turns and isinstance(turns[-1], Mapping) and \
            ROLES.get(str(turns[-1].get("from"))) == "assistant"
        prompt = _context(turns[:-1] if answered else turns, where, "conversations", len(images))
        meta = {k: row[k] for k in ("hallucination",) if k in row}
        return [_pair(row_id(row, where), images, prompt, outputs[0 if first else 1], outputs[1 if first else 0],
                      "llava_rlhf", **({"meta": json.dumps(meta)} if meta else {}))]

    return _each(records, path, image_root, convert)


def convert_stic(records, path=None, image_root=None) -> Records:
    """STIC-LVLM/stic-coco-preference-6k: `chosen` and `rejected` are [user, assistant] role/content lists with the
    same user prompt; `image` relative to the image root (COCO train2014)."""

    def convert(row, where):
        chosen, rejected = row["chosen"], row["rejected"]
        for name, turns in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(turns, list) or len(turns) < 2:
                raise where.fail("expected STIC's [user, assistant] messages", field=name)
        images = image_values(row.get("image"), where, "image")
        prompt = _context(chosen[:-1], where, "chosen", len(images))
        return [_pair(row_id(row, where, "id", "image"), images, prompt, _last_answer(chosen, where, "chosen"),
                      _last_answer(rejected, where, "rejected"), "stic")]

    return _each(records, path, image_root, convert)


# ---- HALVA: phrase tags -> spans

_MASK = re.compile(r"<MASK>\s*(.*?)\s*</MASK>", re.DOTALL)


def unmask(text: str) -> tuple[str, list[list[int]]]:
    """HALVA's `<MASK> phrase </MASK>` tags -> (the text without them, [start, end) of each phrase in it)."""
    out, spans, last = [], [], 0
    for match in _MASK.finditer(text):
        out.append(text[last:match.start()])
        start = sum(len(part) for part in out)
        out.append(match.group(1))
        spans.append([start, start + len(match.group(1))])
        last = match.end()
    out.append(text[last:])
    return "".join(out), spans


def convert_halva(records, path=None, image_root=None) -> Records:
    """pritamqu/HALVA data.json: `correct_answer_masked` and `hallucinated_answer_masked` tag the k-th correct
    phrase and the k-th hallucinated phrase with `<MASK> ... </MASK>`; they become `chosen_spans` and
    `rejected_spans` (as many on each side, in order) for `--variant halva`. `image` relative to the image root
    (its first folder names the source: vg, coco, gqa, ...); `tag` (closed, open, qa) goes to meta."""
    import json

    def convert(row, where):
        chosen, chosen_spans = unmask(text_of(row, "correct_answer_masked", where))
        rejected, rejected_spans = unmask(text_of(row, "hallucinated_answer_masked", where))
        if len(chosen_spans) != len(rejected_spans):
            raise where.fail(f"{len(chosen_spans)} tagged phrases in the correct answer but {len(rejected_spans)} "
                             "in the hallucinated one; HALVA pairs them in order", field="hallucinated_answer_masked")
        images = image_values(row.get("image"), where, "image")
        extra = {"chosen_spans": chosen_spans, "rejected_spans": rejected_spans} if chosen_spans else {}
        meta = {k: row[k] for k in ("tag", "raw_answer") if row.get(k) is not None}
        return [_pair(row_id(row, where), images, _simple(text_of(row, "question", where), images), chosen,
                      rejected, "halva", **extra, **({"meta": json.dumps(meta)} if meta else {}))]

    return _each(records, path, image_root, convert)


# ---- mDPO: a templated prompt

_USER = re.compile(r"(?:USER|Human|user)\s*:\s*(.*?)\s*(?:ASSISTANT|Assistant|assistant)\s*:\s*$", re.DOTALL)


def convert_mdpo(records, path=None, image_root=None) -> Records:
    """fwnlp/mDPO-preference-data (vlfeedback_llava_10k.json): `prompt` is already templated ("... USER:
    <image>\\nQUESTION ASSISTANT:"); the question is taken back out of it. `img_path` relative to the image root."""

    def convert(row, where):
        prompt = text_of(row, "prompt", where)
        match = _USER.search(prompt)
        question = match.group(1) if match else prompt
        images = image_values(row.get("img_path"), where, "img_path")
        return [_pair(row_id(row, where, "id", "img_path"), images, _simple(question, images),
                      text_of(row, "chosen", where), text_of(row, "rejected", where), "mdpo")]

    return _each(records, path, image_root, convert)


# ---- LLaVA-Hound: video frame folders


def convert_hound(records, path=None, image_root=None) -> Records:
    """ShareGPTVideo sft_dpo_17k.jsonl: `video` is a folder of frames under the image root (the unpacked
    train_300k chunks), `prompt`, `chosen`, `rejected`; `chosen_score` / `rejected_score` kept when present."""
    from align.data.formats.llava import frames_in_folder

    root = Path(image_root) if image_root else getattr(records, "base_dir", None)

    def convert(row, where):
        video = row.get("video")
        if isinstance(video, list):
            frames = [str(f) for f in video]
        elif isinstance(video, str) and video.strip():
            frames = frames_in_folder(video, root, where)
        else:
            raise where.fail("expected a folder of frames or a list of frame paths", field="video")
        extra = {k: number_of(row, k, where) for k in ("chosen_score", "rejected_score") if row.get(k) is not None}
        return [_pair(row_id(row, where), [frames], user_turn(text_of(row, "prompt", where), 0, 1),
                      text_of(row, "chosen", where), text_of(row, "rejected", where), "hound", **extra)]

    return _each(records, path, image_root, convert)


# ---- BPO: scored completions


def convert_bpo(records, path=None, image_root=None) -> Records:
    """renjiepi/BPO_Instruct (bpo_instruct.json): `completions` [{score, response, type}]; every pair of
    completions with different scores, the higher chosen (ground truth, score 1, against the injected or
    image-weakened negatives, score 0), as BPO's trainer pairs them. `image` relative to the image root."""
    import json

    def convert(row, where):
        completions = row.get("completions")
        if not isinstance(completions, list) or not completions:
            raise where.fail("expected a list of {score, response, type}", field="completions")
        scored = []
        for k, c in enumerate(completions):
            if not isinstance(c, Mapping):
                raise where.fail("expected {score, response, type}", field=f"completions[{k}]")
            scored.append((number_of(c, "score", Where(where.path, where.row)), text_of(c, "response", where),
                           c.get("type")))
        images = image_values(row.get("image"), where, "image")
        prompt = _simple(text_of(row, "prompt", where), images)
        rid = row_id(row, where, "id", "image")
        pairs = []
        for i, j in combinations(range(len(scored)), 2):
            if scored[i][0] == scored[j][0]:
                continue
            hi, lo = (i, j) if scored[i][0] > scored[j][0] else (j, i)
            pairs.append(_pair(f"{rid}-{hi}-{lo}", images, prompt, scored[hi][1], scored[lo][1], "bpo",
                               chosen_score=scored[hi][0], rejected_score=scored[lo][0],
                               meta=json.dumps({"chosen_type": scored[hi][2], "rejected_type": scored[lo][2]})))
        return pairs

    return _each(records, path, image_root, convert)


# ---- VLFeedback: rated completions -> builder sources


def convert_vlfeedback(records, path=None, image_root=None) -> Records:
    """MMInstruction/VLFeedback (vlfeedback_80k.jsonl): `completions` (a list of {model, response, annotations},
    or the dict of lists `datasets` makes of it) -> builder sources with `responses` and `ratings` ({aspect:
    {Rating, Rationale}} each); `align build-pairs vlfeedback` pairs them as Silkie does. `img_path` relative to
    the image root (merged_images/)."""

    def convert(row, where):
        completions = row.get("completions")
        if isinstance(completions, Mapping):  # dict of lists, as `datasets` stores a sequence of structs
            keys = list(completions)
            completions = [dict(zip(keys, values, strict=True)) for values in zip(*completions.values(), strict=True)]
        if not isinstance(completions, list) or not completions:
            raise where.fail("expected a list of {model, response, annotations}", field="completions")
        responses, ratings = [], []
        for k, c in enumerate(completions):
            if not isinstance(c, Mapping) or not isinstance(c.get("response"), str):
                raise where.fail("expected {model, response, annotations}", field=f"completions[{k}]")
            responses.append(c["response"])
            ratings.append(c.get("annotations") or {})
        images = image_values(row.get("img_path"), where, "img_path")
        return [{"id": row_id(row, where), "images": images, "question": strip_placeholders(
            text_of(row, "prompt", where)), "responses": responses, "ratings": ratings, "method": "vlfeedback"}]

    return _each(records, path, image_root, convert, kind="source")


# ---- TRL and LLaMA-Factory conversational pairs


def _messages(value: Any, where: Where, field: str, role: str | None = None) -> list[dict]:
    """TRL's conversational messages (content a string or a list of parts) -> the contract's, image parts
    reduced to {"type": "image"} and placeholders removed from text; a bare string is one `role` message."""
    if isinstance(value, str):
        return user_turn(value) if role == "user" else assistant_turn(value)
    if not isinstance(value, list) or not value:
        raise where.fail("expected a list of messages or a string", field=field)
    out = []
    for k, message in enumerate(value):
        if not isinstance(message, Mapping) or message.get("role") not in ("system", "user", "assistant"):
            raise where.fail("expected {role, content}", field=f"{field}[{k}]")
        content = message.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "text": strip_placeholders(content)}]
        elif isinstance(content, list):
            parts = []
            for part in content:
                kind = part.get("type") if isinstance(part, Mapping) else None
                if kind in ("image", "video"):
                    parts.append({"type": kind})
                elif kind == "text" and isinstance(part.get("text"), str):
                    parts.append({"type": "text", "text": strip_placeholders(part["text"])})
                else:
                    raise where.fail("expected content parts of type image, video or text", field=f"{field}[{k}]")
        else:
            raise where.fail("expected content as a string or a list of parts", field=f"{field}[{k}]")
        out.append({"role": message["role"], "content": parts})
    return out


def convert_trl(records, path=None, image_root=None) -> Records:
    """TRL's vision preference datasets (trl-lib/rlaif-v, HuggingFaceH4/rlaif-v_formatted): `images`, and
    `prompt` / `chosen` / `rejected` as conversational messages (or strings)."""

    def convert(row, where):
        images = image_values(row.get("images"), where, "images")
        prompt = _messages(row["prompt"], where, "prompt", role="user")
        if isinstance(row["prompt"], str) and images:
            prompt = user_turn(row["prompt"], len(images))
        return [{"id": row_id(row, where), "images": images, "prompt": prompt,
                 "chosen": _messages(row["chosen"], where, "chosen"),
                 "rejected": _messages(row["rejected"], where, "rejected"), "method": "trl"}]

    return _each(records, path, image_root, convert)


def convert_sharegpt_pairs(records, path=None, image_root=None) -> Records:
    """LLaMA-Factory's ShareGPT preference format (e.g. Zhihui/VLFeedback): `conversations` ending with a human
    turn, `chosen` and `rejected` as {from, value}, `images`."""

    def convert(row, where):
        images = image_values(row.get("images"), where, "images")
        return [_pair(row_id(row, where), images, _context(row["conversations"], where, "conversations", len(images)),
                      text_of(row, "chosen", where), text_of(row, "rejected", where), "sharegpt_pairs")]

    return _each(records, path, image_root, convert)
