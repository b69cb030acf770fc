"""Answers from a model for a benchmark's questions: batched, written as it goes, resumable.

Each question row is {question_id (or id/image_id), image, text}; the model sees one user turn, the image and the
question text (or `prompt` for captioning benchmarks whose rows have no text). The answers go to
`<out>.partial`, one JSONL row per question, flushed after every batch; a rerun of the same command skips the
ids already answered, and the file is renamed to `<out>` once every question has its answer, so `<out>` only
ever exists complete.

`mode="likelihood"` (yes/no benchmarks) writes no text but the log-probabilities of the first answer token,
yes_logprob = log(P(Yes) + P(yes)) and no_logprob alike, as RLAIF-V's labeler reads them: a model too small to
answer in words is still probed on what it believes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.errors import ConfigError, DataError
from align.eval.common import index_by_id, read_rows

ID_FIELDS = ("question_id", "id", "image_id")
MODES = ("generate", "likelihood")
YES_NO = {"yes": ("Yes", "yes"), "no": ("No", "no")}


@dataclass
class GenerationSettings:
    model: str
    adapter: str | None = None
    image_root: str | None = None
    batch_size: int = 16
    max_new_tokens: int = 128
    temperature: float = 0.0
    prompt: str | None = None  # for rows without `text` (captioning)
    suffix: str = ""  # appended to every question (e.g. POPE's "\nAnswer the question using a single word ...")
    mode: str = "generate"
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        from align.ranges import AT_LEAST_ONE, NON_NEGATIVE, range_problems

        problems = range_problems(self, {"batch_size": AT_LEAST_ONE, "max_new_tokens": AT_LEAST_ONE,
                                         "temperature": NON_NEGATIVE, "seed": NON_NEGATIVE})
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if problems:
            raise ConfigError(problems)


def generate_answers(questions: str | Path, out: str | Path, settings: GenerationSettings,
                     progress: bool = True) -> Path:
    """Answer every question of `questions` into `out` (JSONL); returns `out`."""
    from align.data.images import resolve_image


    questions = Path(questions)
    out = Path(out)
    rows = read_rows(questions)
    if not rows:
        raise DataError(questions, "has no questions")
    by_id = index_by_id(questions, rows, ID_FIELDS)
    numbers = {id(row): number for number, row in rows}
    base_dir = Path(settings.image_root) if settings.image_root else questions.parent
    for key, row in by_id.items():  # every prompt is checked before the model loads
        if not isinstance(row.get("text", settings.prompt), str):
            raise DataError(questions, f"question {key!r} has no text and no prompt was given (prompt=...)",
                            row=numbers[id(row)], field="text")
        if "image" not in row:
            raise DataError(questions, f"question {key!r} has no image", row=numbers[id(row)], field="image")
        resolve_image(row["image"], base_dir, None, path=questions, row=numbers[id(row)], field="image")
    partial = out.with_name(out.name + ".partial")
    record = out.with_name(out.name + ".made-by.json")
    made_by = answers_provenance(questions, settings)
    if out.is_file() or partial.is_file():
        previous = _read_record(record)
        if previous == made_by and out.is_file():
            return out
        if previous != made_by:
            what = out if out.is_file() else partial
            differs = ", ".join(k for k in made_by if (previous or {}).get(k) != made_by[k]) if previous else \
                "no record of what made them"
            _note(f"{what} holds answers made otherwise ({differs}); answering again")
            for path in (out, partial, record):
                path.unlink(missing_ok=True)
    done = _answered(partial, by_id)
    todo = [key for key in by_id if key not in done]
    if todo:
        from align.models.generate import Generator

        generator = Generator(settings.model, adapter=settings.adapter, dtype=settings.dtype,
                              batch_size=settings.batch_size)
        created = not out.parent.exists()
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            _answer_into(partial, record, made_by, todo, by_id, numbers, questions, base_dir, generator, settings,
                         len(done), progress)
        except BaseException:
            if partial.is_file() and partial.stat().st_size == 0:  # nothing answered: leave nothing behind
                partial.unlink()
                record.unlink(missing_ok=True)
                if created and not any(out.parent.iterdir()):
                    out.parent.rmdir()
            raise
    os.replace(partial, out)
    return out


def _answer_into(partial: Path, record: Path, made_by: dict, todo: list, by_id: dict, numbers: dict,
                 questions: Path, base_dir: Path, generator, settings: GenerationSettings, done: int,
                 progress: bool) -> None:
    """Append the answers of `todo` to `partial` batch by batch (flushed, so a kill loses at most a batch)."""
    from align.data.images import load_media
    from align.files import atomic_write_text
    from align.progress import progress_task

    if not record.is_file():
        atomic_write_text(record, json.dumps(made_by, indent=1, sort_keys=True) + "\n")
    with open(partial, "a", encoding="utf-8") as sink, progress_task(
            f"answering {questions.name}", len(by_id), "questions", completed=done, enabled=progress) as task:
        for start in range(0, len(todo), settings.batch_size):
            keys = todo[start:start + settings.batch_size]
            conversations, images = [], []
            for key in keys:
                row = by_id[key]
                text = row.get("text", settings.prompt) + settings.suffix
                conversations.append([{"role": "user", "content": [{"type": "image"},
                                                                   {"type": "text", "text": text}]}])
                images.append([load_media(row["image"], base_dir, None, path=questions, row=numbers[id(row)],
                                          field="image")])
            answers = _answer(generator, conversations, images, settings, start)
            for key, answer in zip(keys, answers, strict=True):
                sink.write(json.dumps({"question_id": key, **answer}) + "\n")
            sink.flush()
            if task is not None:
                task.advance(len(keys))


def answers_provenance(questions: Path, settings: GenerationSettings) -> dict[str, Any]:
    """What answers depend on: the model (path and a fingerprint of its files), the adapter, the questions'
    content and every generation setting but the batch size. Answers, finished or partial, made under another
    record are never mixed with new ones."""
    import dataclasses
    import hashlib

    generation = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("model", "adapter", "batch_size")}
    return {"model": settings.model, "model_files": _files_fingerprint(settings.model),
            "adapter": settings.adapter, "adapter_files": _files_fingerprint(settings.adapter),
            "questions": hashlib.sha256(questions.read_bytes()).hexdigest(), "generation": generation}


def _files_fingerprint(folder: str | None) -> str | None:
    """Names, sizes and modification times of a local model folder's files (a retrained model at the same path
    differs); None for a hub id or nothing."""
    import hashlib

    if not folder or not Path(folder).is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _read_record(record: Path) -> dict | None:
    """What the record beside the answers says made them; None when missing or unreadable (a torn write)."""
    try:
        return json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _note(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(message, highlight=False)


def _answer(generator, conversations, images, settings: GenerationSettings, start: int) -> list[dict[str, Any]]:
    if settings.mode == "likelihood":
        scores = generator.answer_logprobs(conversations, images, YES_NO)
        return [{"text": "yes" if s["yes"] > s["no"] else "no", "yes_logprob": s["yes"], "no_logprob": s["no"]}
                for s in scores]
    texts = generator.generate(conversations, images, seed=settings.seed + start,
                               max_new_tokens=settings.max_new_tokens, temperature=settings.temperature)
    return [{"text": t} for t in texts]


def _answered(partial: Path, questions: dict) -> set:
    """Ids already in a partial answers file; a torn last line (a kill mid-write) is cut off."""
    if not partial.is_file():
        return set()
    done, keep = set(), 0
    with open(partial, "rb") as f:
        data = f.read()
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if row.get("question_id") not in questions:
            raise DataError(partial, f"answers id {row.get('question_id')!r} is not a question; delete the file "
                            "to start over")
        done.add(row["question_id"])
        keep += len(line)
    if keep != len(data):
        with open(partial, "r+b") as f:
            f.truncate(keep)
    return done

