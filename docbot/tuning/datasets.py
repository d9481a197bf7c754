"""Training records from an indexed domain: the three formats, the split by document, validation, the card.

A record is one question with its answer and the chunk it came from. The instruction and chat formats carry the
prompt exactly as the bot builds it at answer time (`prompts.build_messages`), so a fine-tuned model is trained on
what it will see; RAFT-style copies add distractor chunks from other documents of the same split, so the model
learns to answer from the right block.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..files import folder_lock, jsonl_rows, sha256_file, write_bytes_atomic, write_json_atomic
from ..config import Config
from ..errors import DocbotError
from ..rag.index import StoredChunk
from ..rag.context import Embed, select_context
from ..rag.prompts import DECLINE_REPLY, INSTRUCTIONS, build_messages
from ..providers import Provider
from .judge import judge
from .qa_generation import Deduper, QAPair, grounded, llm_pairs, rules_pairs
from ..rag.retrieval import Source

__all__ = ["FORMATS", "Record", "to_row", "validate_jsonl", "validate_qa_pairs", "prepare_dataset"]

FORMATS = ("instruction", "qa", "chat")
VALIDATION_FRACTION = 0.2  # share of documents held out; at least one when a domain has two or more
RAFT_DISTRACTORS = 2  # distractor chunks added beside the gold chunk in a RAFT example
# Share of the generated records copied again with other documents' chunks only and DECLINE_REPLY as the target:
# RAFT keeps the gold document in 80% of its examples; here the other 20% teach the answer path's decline.
DECLINE_SHARE = 0.2
_REQUIRED = {"instruction": ("instruction", "input", "output"), "qa": ("question", "context", "answer"),
             "chat": ("messages",)}


@dataclass(frozen=True)
class Record:
    """One training example before formatting; `context` is the gold chunk first, then any distractors."""

    question: str
    answer: str
    source: str | None
    page: int | None
    chunk_id: str | None
    generator: str  # "rules", "llm" or "user"
    context: tuple[StoredChunk, ...]
    paraphrase: str | None = None
    raft: bool = False  # distractor blocks in the context (RAFT)
    declines: bool = False  # distractors only, the answer is DECLINE_REPLY


def to_row(record: Record, fmt: str, order: Sequence[int] | None = None, context_chars: int = 0,
           embed: Embed | None = None) -> dict:
    """The record in one of the guide's formats, with its provenance alongside; its context selected as answers
    select it (`context_chars` with `embed`; whole blocks without), so the training prompt is the answer prompt."""
    blocks = [c.block for c in (record.context[i] for i in (order or range(len(record.context))))]
    prompt = build_messages(record.question, select_context(record.question, blocks, context_chars, embed)
                            if embed is not None else blocks)
    meta = {"question": record.question, "source": record.source, "page": record.page, "chunk_id": record.chunk_id,
            "generator": record.generator, "raft": record.raft, "declines": record.declines}
    if fmt == "instruction":
        return {"instruction": INSTRUCTIONS, "input": prompt[-1]["content"], "output": record.answer, **meta}
    if fmt == "qa":
        return {"question": record.question, "context": record.context[0].text if record.context else "",
                "answer": record.answer, **meta}
    if fmt == "chat":
        return {"messages": [*prompt, {"role": "assistant", "content": record.answer}], **meta}
    raise DocbotError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def validate_qa_pairs(qa_pairs: Sequence[dict] | None) -> list[dict]:
    """The user's pairs, checked: a missing or empty field is an error naming the pair's index and the field."""
    checked = []
    for i, pair in enumerate(qa_pairs or []):
        if not isinstance(pair, dict):
            raise DocbotError(f"qa_pairs[{i}] must be a dict with question, answer and optional source")
        for field in ("question", "answer"):
            if not isinstance(pair.get(field), str) or not pair[field].strip():
                raise DocbotError(f"qa_pairs[{i}]: field {field!r} is missing or empty")
        if pair.get("source") is not None and not isinstance(pair["source"], str):
            raise DocbotError(f"qa_pairs[{i}]: field 'source' must be a file name (a string)")
        checked.append(pair)
    return checked


def validate_jsonl(path: str | Path, fmt: str | None = None) -> list[str]:
    """Every problem in a JSONL training file as 'file:line: reason' (empty when the file is valid)."""
    path = Path(path)
    fmt = fmt or next((f for f in FORMATS if path.name.startswith(f)), None)
    problems = []
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [f"{path}: cannot be read ({exc.strerror or exc})"]
    if raw.startswith(b"\xef\xbb\xbf"):  # the trainer reads UTF-8 without one and refuses line 1
        problems.append(f"{path}:1: starts with a UTF-8 byte order mark; save the file without it")
        raw = raw[3:]
    for no, row in jsonl_rows(raw):
        if isinstance(row, UnicodeDecodeError):
            problems.append(f"{path}:{no}: not UTF-8 text ({row.reason} at byte {row.start + 1} of the line); "
                            f"save the file as UTF-8")
            continue
        if isinstance(row, json.JSONDecodeError):
            problems.append(f"{path}:{no}: not valid JSON ({row.msg} at column {row.colno})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{path}:{no}: expected a JSON object, got {type(row).__name__}")
            continue
        row_fmt = fmt or next((f for f, keys in _REQUIRED.items() if set(keys) <= set(row)), None)
        if row_fmt is None:
            problems.append(f"{path}:{no}: keys {sorted(row)} match no format ({_describe_formats()})")
            continue
        problems += [f"{path}:{no}: {p}" for p in _row_problems(row, row_fmt)]
    if not raw.strip():
        problems.append(f"{path}: no examples")
    return problems


def _row_problems(row: dict, fmt: str) -> list[str]:
    problems = [f"missing or empty field {k!r}" for k in _REQUIRED[fmt]
                if k != "messages" and (not isinstance(row.get(k), str) or not row[k].strip())]
    if fmt == "chat":
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            return ["'messages' must be a non-empty list"]
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                problems.append(f"messages[{i}] must have role system/user/assistant and string content")
        if isinstance(messages[-1], dict) and messages[-1].get("role") != "assistant":
            problems.append("the last message must be the assistant's answer")
    return problems


def _describe_formats() -> str:
    return "; ".join(f"{f}: {', '.join(keys)}" for f, keys in _REQUIRED.items())


# -- preparing a dataset ----------------------------------------------------------------------------------------


def prepare_dataset(chunks: Sequence[StoredChunk], *, domain: str, config: Config, generator: str,
                    provider: Provider | None, retrieve: Callable[[str], list[Source]], embed: Embed,
                    qa_pairs: Sequence[dict] | None = None, formats: Sequence[str] = FORMATS,
                    max_examples: int | None = None, seed: int = 0, held_out: Sequence[str] | None = None,
                    progress: bool = True) -> dict:
    """Generate, filter, split and write one stamped dataset; returns the written paths by role. `held_out`: the
    documents (as cited, e.g. "policies/visiting.md") whose examples form the validation split; by default a
    random `VALIDATION_FRACTION` of them."""
    from tqdm.auto import tqdm

    user_pairs = validate_qa_pairs(qa_pairs)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise DocbotError(f"unknown format(s) {unknown or formats}; choose from {', '.join(FORMATS)}")
    if not chunks:
        raise DocbotError(f"domain '{domain}' has no indexed text; add documents and load it first")
    if generator not in ("rules", "llm"):
        raise DocbotError(f"generator must be 'auto', 'rules' or 'llm', got {generator!r}")
    max_examples = config.max_training_examples if max_examples is None else max_examples
    rng = random.Random(seed)
    validation_docs = _validation_sources(sorted({c.source for c in chunks}), rng, held_out)  # before the work
    started = time.monotonic()
    records, kept, dropped, dedupe = [], Counter(), Counter(), Deduper()
    bar = tqdm(chunks, desc=f"Generating QA ({generator})", unit="chunk", file=sys.stderr, disable=not progress)
    for chunk in bar:
        pairs, complete = (rules_pairs(chunk.text), True) if generator == "rules" else llm_pairs(provider, chunk.text)
        dropped["reply cut off or unreadable"] += not complete
        for pair in pairs:
            reason = _drop_reason(pair, chunk.text, dedupe)
            if reason:
                dropped[reason] += 1
                continue
            records.append(Record(pair.question, pair.answer, chunk.source, chunk.page, chunk.id,
                                  pair.generator, (chunk,), pair.paraphrase))
            kept[pair.generator] += 1
        bar.set_postfix(pairs=len(records), per_s=f"{len(records) / max(time.monotonic() - started, 1e-9):.1f}")
    by_id = {c.id: c for c in chunks}
    for pair in user_pairs:
        hits = retrieve(pair["question"])
        best = next((h for h in hits if pair.get("source") in (None, h.file)), hits[0] if hits else None)
        context = (by_id[best.chunk_id],) if best is not None and best.chunk_id in by_id else ()
        records.append(Record(pair["question"], pair["answer"], pair.get("source") or (best and best.file),
                              best.page if best else None, best.chunk_id if best else None, "user", context))
    kept["user"] = len(user_pairs)

    splits = {"train": [], "validation": []}
    for record in records:
        splits["validation" if record.source in validation_docs else "train"].append(record)
    for name, split in splits.items():
        generated = [r for r in split if r.generator != "user"]
        pool = [c for c in chunks if (c.source in validation_docs) == (name == "validation")]
        split += _raft_copies(generated, pool, rng) + _decline_copies(generated, pool, rng)
    splits = _cap(splits, max_examples, rng)

    out = Path(config.data_dir)
    with folder_lock(out):  # a second process writing a dataset in the same second gets the next stamp
        stamp = _free_stamp(out, domain)
        paths: dict[str, str] = {}
        for fmt in formats:
            for name, split in splits.items():
                path = out / f"{fmt}_data_{stamp}_{name}.jsonl"
                rows = (json.dumps(to_row(r, fmt, _order(r, rng), config.context_chars, embed), ensure_ascii=False)
                        for r in split)
                write_bytes_atomic(path, ("\n".join(rows) + "\n").encode("utf-8") if split else b"")
                paths[f"{fmt}_{name}"] = str(path)
        card = {
            "schema_version": 1, "domain": domain, "stamp": stamp,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "generator": {"requested": generator, "kept": dict(kept), "dropped": {k: v for k, v in dropped.items() if v},
                          "seconds": round(time.monotonic() - started, 2)},
            "counts": {fmt: {name: len(split) for name, split in splits.items()} for fmt in formats},
            "raft_examples": {name: sum(r.raft for r in split) for name, split in splits.items()},
            "decline_examples": {name: sum(r.declines for r in split) for name, split in splits.items()},
            "sources": [{"file": s, "sha256": h, "split": "validation" if s in validation_docs else "train"}
                        for s, h in sorted({(c.source, c.file_hash) for c in chunks})],
            "files": {Path(p).name: sha256_file(Path(p)) for p in paths.values()},
            "config": {k: v for k, v in asdict(config).items()
                       if k in ("chunk_size", "chunk_overlap", "embedding_model")}
            | {"max_examples": max_examples, "seed": seed, "formats": list(formats)},
            "held_out_paraphrases": [{"question": r.paraphrase, "answer": r.answer, "source": r.source, "page": r.page}
                                     for r in splits["train"] if r.paraphrase and not r.raft],
        }
        card_path = out / f"dataset_card_{stamp}.json"
        write_json_atomic(card_path, card)
        bundle = out / f"bundle_{stamp}.zip"
        _write_bundle(bundle, {f"{role.split('_')[0]}_data_{role.split('_')[1]}.jsonl": Path(p)
                               for role, p in paths.items()} | {"dataset_card.json": card_path})
        return {**paths, "card": str(card_path), "bundle": str(bundle)}


def _drop_reason(pair: QAPair, chunk_text: str, dedupe: Deduper) -> str | None:
    """Why a generated pair is not kept (None: kept): the judge's reason (`judge.REASONS`), or a question that
    nearly repeats a kept one (`qa_generation.DUPLICATE_JACCARD`)."""
    reason = judge(pair, chunk_text)
    if reason:
        return reason
    if not dedupe.add(pair.question):
        return "near-duplicate question"
    return None


def _validation_sources(sources: list[str], rng: random.Random, held_out: Sequence[str] | None) -> set[str]:
    if held_out is not None:
        unknown = sorted(set(held_out) - set(sources))
        if unknown:
            raise DocbotError(f"held_out names {', '.join(unknown)}, not a document of this domain; choose from "
                              f"{', '.join(sources)}")
        if set(held_out) >= set(sources):
            raise DocbotError("held_out names every document of the domain; leave at least one for training")
        return set(held_out)
    if len(sources) < 2:
        return set()
    return set(rng.sample(sources, max(1, round(len(sources) * VALIDATION_FRACTION))))


def _raft_copies(records: list[Record], pool: Sequence[StoredChunk], rng: random.Random) -> list[Record]:
    """Each record again with distractor chunks from other documents of the same split (`pool`)."""
    copies = []
    for record in records:
        others = [c for c in pool if c.source != record.source]
        if others:
            distractors = tuple(rng.sample(others, min(RAFT_DISTRACTORS, len(others))))
            copies.append(replace(record, context=record.context + distractors, raft=True))
    return copies


def _decline_copies(records: list[Record], pool: Sequence[StoredChunk], rng: random.Random) -> list[Record]:
    """`DECLINE_SHARE` of the records again with only other documents' chunks, none of which holds the answer,
    and `DECLINE_REPLY` as the answer: a model tuned on them says the blocks lack it instead of guessing."""
    copies = []
    for record in rng.sample(records, math.ceil(len(records) * DECLINE_SHARE)):  # a small split still gets one
        others = [c for c in pool if c.source != record.source]
        # a few more than needed, then those holding the answer out: no grounding check over the whole pool
        drawn = rng.sample(others, min(2 * (RAFT_DISTRACTORS + 1), len(others)))
        distractors = tuple([c for c in drawn if not grounded(record.answer, c.text)][:RAFT_DISTRACTORS + 1])
        if distractors:
            copies.append(replace(record, answer=DECLINE_REPLY, context=distractors, raft=True, declines=True,
                                  paraphrase=None))
    return copies


def _cap(splits: dict[str, list[Record]], max_examples: int, rng: random.Random) -> dict[str, list[Record]]:
    """At most `max_examples` in all, kept in proportion per split; the user's own pairs always stay."""
    total = sum(len(s) for s in splits.values())
    capped = {}
    for name, split in splits.items():
        user = [r for r in split if r.generator == "user"]
        rest = [r for r in split if r.generator != "user"]
        rng.shuffle(rest)
        room = max(0, (len(split) * max_examples) // max(total, 1) - len(user)) if total > max_examples \
            else len(rest)
        capped[name] = user + rest[:room]
    return capped


def _order(record: Record, rng: random.Random) -> list[int]:
    """Where the gold block sits among the distractors: shuffled, so position says nothing."""
    order = list(range(len(record.context)))
    rng.shuffle(order)
    return order


def _free_stamp(folder: Path, domain: str) -> str:
    """`<domain>_<UTC time>`, with a suffix if a dataset with that stamp exists: nothing is overwritten."""
    base = f"{domain}_{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    stamp, n = base, 1
    while (folder / f"dataset_card_{stamp}.json").exists():
        n += 1
        stamp = f"{base}-{n}"
    return stamp


def _write_bundle(path: Path, files: dict[str, Path]) -> None:
    """The one zip the notebook asks for: data files (`chat_data_train.jsonl`, ...) and the card at its top level."""
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, f in files.items():
            zf.write(f, name)
    write_bytes_atomic(path, tmp.read_bytes())
    tmp.unlink()
