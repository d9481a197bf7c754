"""How well `docbot.rag.evidence.check_answer` separates supported answers from wrong ones, and what it costs.

    python benchmarks/evidence.py [--refresh] [--thresholds 0.6,0.7,0.8]

1. Real answers: every answerable question of eval_sets/medical_dev.jsonl is asked through docbot's own path
   (llama.cpp, Qwen2.5-Coder-0.5B-Instruct, top_k=2, a fresh conversation each). The answers and their blocks are
   cached in benchmarks/_work/evidence_answers.json, so tuning the threshold does not run the model again
   (`--refresh` asks again). The answers that contain the gold answer (case-insensitive) are checked; each one
   flagged (supported False) is a false flag.
   The answers without the gold answer are shown too, for information (most of them are wrong answers).
2. Planted wrong answers, per question: the gold-containing answer (else the gold sentence of its block) with the
   gold span replaced by a wrong one of the same kind (another number or time, a swapped unit, a name or code
   from another document of the domain), and off-topic answers (sentences of documents not cited). Each is
   checked against the question's real blocks; each one not flagged is a miss. Shown apart, and not in the
   total: "same block" plants, whose wrong number or name is taken from the cited blocks themselves (the
   hardest case; a bare "48" or "Dr. Anselm Rooke" that occurs in the blocks cannot be told from a right answer
   without the question).
3. Timing: p50/p95 of check_answer over all those calls.

`--show` prints each flagged real answer and each missed plant, with its best evidence sentence.

Tuned on the dev set only; the test set is never read here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEV = ROOT / "eval_sets" / "medical_dev.jsonl"
CACHE = ROOT / "benchmarks" / "_work" / "evidence_answers.json"
PROVIDER, MODEL, TOP_K = "llamacpp", "Qwen2.5-Coder-0.5B-Instruct", 2
PER_KIND = 3  # wrong answers of each kind per question
UNIT_SWAPS = {"mg": "mL", "ml": "mg", "minutes": "hours", "minute": "hour", "hours": "days", "hour": "day",
              "days": "weeks", "day": "week", "weeks": "months", "percent": "mg", "degrees": "minutes",
              "visitors": "hours", "celsius": "Fahrenheit"}
_NUMBER = re.compile(r"\b\d{1,2}:\d{2}\b|\b\d+\b")
_UNIT = re.compile(r"\b(\d+)\s*(" + "|".join(sorted(UNIT_SWAPS, key=len, reverse=True)) + r")\b", re.I)
_CODE = re.compile(r"\b[A-Z]{1,4}-?\d+\b")
_NAME = re.compile(r"\b(?:(?:Dr|Mr|Mrs|Ms)\. )?[A-Z][a-z]+(?:[ -][A-Z][a-z]+)+\b|\b[A-Z][a-z]+[A-Z][a-z]+\b")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refresh", action="store_true", help="ask the model again instead of using the cache")
    parser.add_argument("--thresholds", default="", help="comma-separated thresholds to compare (default: the "
                                                         "module's SUPPORT_THRESHOLD)")
    parser.add_argument("--show", action="store_true", help="print every flagged real answer and missed plant")
    args = parser.parse_args()

    from docbot.rag import evidence

    cached = _answers(args.refresh)
    real = [r for r in cached["answers"] if r["gold"].lower() in r["text"].lower()]
    other = [r for r in cached["answers"] if r["gold"].lower() not in r["text"].lower()]
    planted = _plants(cached["answers"], _documents())
    thresholds = [float(t) for t in args.thresholds.split(",") if t] or [evidence.SUPPORT_THRESHOLD]
    kinds = list(dict.fromkeys(p["kind"] for p in planted))
    timings: list[float] = []

    def flagged(text: str, blocks, threshold: float, label: str) -> bool:
        t0 = time.perf_counter()
        ev = evidence.check_answer(text, [tuple(b) for b in blocks], threshold=threshold)
        timings.append(time.perf_counter() - t0)
        if args.show and threshold == thresholds[-1] and (not ev.supported) == label.startswith("FLAGGED"):
            print(f"  {label} score {ev.score:.2f}: {text!r}\n      best: {ev.sentences[:1]}")
        return not ev.supported

    rows: dict[str, list[list[bool]]] = {}
    for threshold in thresholds:
        rows.setdefault("real with gold: flagged", []).append(
            [flagged(r["text"], r["blocks"], threshold, f"FLAGGED real {r['id']}") for r in real])
        rows.setdefault("real without gold: flagged", []).append(
            [flagged(r["text"], r["blocks"], threshold, f"FLAGGED no-gold {r['id']}") for r in other])
        by_kind = {k: [flagged(p["text"], p["blocks"], threshold, f"MISSED {p['id']} {k}")
                       for p in planted if p["kind"] == k] for k in kinds}
        rows.setdefault("planted (brief's kinds): flagged", []).append(
            [f for k in kinds if "same block" not in k for f in by_kind[k]])
        for k in kinds:
            rows.setdefault(f"  {k}", []).append(by_kind[k])

    print(f"answers: {cached['provider']} {cached['model']} top_k={cached['top_k']}; {len(real)}/"
          f"{len(cached['answers'])} answerable dev questions answered with the gold answer (case-insensitive)")
    print()
    print(f"{'threshold':<34} " + " ".join(f"{t:>14.2f}" for t in thresholds))
    for name, columns in rows.items():
        print(f"{name:<34} " + " ".join(f"{f'{sum(c)}/{len(c)}':>7} {100 * sum(c) / max(len(c), 1):>5.1f}%"
                                        for c in columns))
    ms = sorted(t * 1000 for t in timings)
    print()
    print(f"check_answer over {len(ms)} calls: p50 {statistics.median(ms):.2f} ms, "
          f"p95 {ms[int(0.95 * (len(ms) - 1))]:.2f} ms, max {ms[-1]:.2f} ms")


def _answers(refresh: bool) -> dict:
    """The dev answers with their blocks: from the cache when it was made with the same model, else asked now."""
    if CACHE.is_file() and not refresh:
        data = json.loads(CACHE.read_text(encoding="utf-8"))
        if (data.get("provider"), data.get("model"), data.get("top_k")) == (PROVIDER, MODEL, TOP_K):
            return data
    from docbot import ConfigurableDocBot, Conversation
    from docbot.tuning.scoring import load_questions

    questions = [q for q in load_questions(DEV) if q.answer is not None]
    rows = []
    with tempfile.TemporaryDirectory(prefix="docbot-evidence-") as index_dir:
        bot = ConfigurableDocBot(provider=PROVIDER, model=MODEL, index_dir=index_dir, top_k=TOP_K,
                                 documents_dir=str(ROOT / "Documents"), models_dir=str(ROOT / "models"))
        bot.load_domain("medical", progress=False)
        for q in questions:
            t0 = time.perf_counter()
            a = bot.ask(q.question, conversation=Conversation(0))
            rows.append({"id": q.id, "question": q.question, "gold": q.answer, "source": q.source, "page": q.page,
                         "text": a.text, "blocks": [list(s.block) for s in a.sources],
                         "files": [[s.file, s.page] for s in a.sources]})
            print(f"{q.id} {time.perf_counter() - t0:5.1f} s  {a.text[:100]!r}", flush=True)
    data = {"provider": PROVIDER, "model": MODEL, "top_k": TOP_K, "answers": rows}
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    return data


def _documents() -> dict[str, list[tuple[int | None, str]]]:
    """Each Medical document's pages as (page, text), by path relative to the domain folder."""
    from docbot.rag.documents import discover, read_pages

    root = ROOT / "Documents" / "Medical"
    return {p.relative_to(root).as_posix(): [(page.number, page.text) for page in read_pages(p)]
            for p in discover(root)}


def _plants(answers: list[dict], docs: dict) -> list[dict]:
    """Wrong answers of each kind for each question (up to PER_KIND of each), checked against that question's
    real blocks. Kinds marked "same block" take the wrong fact from the blocks themselves: the hardest case, and
    the usual slip of a small model (the name or number of the neighbouring sentence)."""
    rng = random.Random(0)
    plants = []
    for r in answers:
        blocks = [tuple(b) for b in r["blocks"]]
        gold = r["gold"]
        if gold.lower() not in _flat(" ".join(t for _, t in blocks)).lower():
            blocks = [_gold_block(r, docs)]  # retrieval missed: check against the gold page instead
        base = r["text"] if gold.lower() in r["text"].lower() else _gold_sentence(gold, blocks)
        cited = {r["source"], *(f for f, _ in r["files"])}  # off-topic means from none of the cited documents
        others = _flat(" ".join(t for path, pages in docs.items() if path not in cited for _, t in pages))
        own = _flat(" ".join(t for _, t in blocks))
        for kind, wrong in _wrong_spans(gold, base, others, own, rng):
            text = re.sub(re.escape(gold), lambda m: wrong, base, flags=re.I)
            plants.append({"id": r["id"], "kind": kind, "text": text, "blocks": blocks})
        sentences = [s for s in _sentences(others) if len(s.split()) >= 6 and "FICTIONAL SAMPLE" not in s]
        for sentence in rng.sample(sentences, PER_KIND):  # not the disclaimer that heads every document
            plants.append({"id": r["id"], "kind": "off-topic", "text": sentence, "blocks": blocks})
    return plants


def _wrong_spans(gold: str, base: str, others: str, own: str, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, the gold span with one fact made wrong) for each kind of fact the gold answer holds."""
    wrong = []
    numbers = _NUMBER.findall(gold)
    if numbers:
        n = numbers[-1]
        in_base = _NUMBER.findall(base)
        same_format = [x for x in _NUMBER.findall(own) if (":" in x) == (":" in n) and x not in in_base]
        if ":" in n:
            pool = [x for x in set(_NUMBER.findall(others)) - set(_NUMBER.findall(own)) if ":" in x]
        else:
            pool = [str(v) for v in range(2, 100) if str(v) not in _NUMBER.findall(own)]
        wrong += [("number", _replace_last(gold, n, x)) for x in _sample(pool, rng)]
        wrong += [("number, same block", _replace_last(gold, n, x)) for x in _sample(same_format, rng)]
        unit = _UNIT.search(gold)
        if unit:
            swapped = UNIT_SWAPS[unit.group(2).lower()]
            wrong.append(("unit", gold[:unit.start(2)] + swapped + gold[unit.end(2):]))
    codes = _CODE.findall(gold)
    if codes:
        pool = set(_CODE.findall(others)) - set(_CODE.findall(own))
        wrong += [("code", gold.replace(codes[0], x)) for x in _sample(pool, rng)]
    elif not numbers:
        words = set(re.findall(r"\w+", base.lower()))
        unrelated = [x for x in _NAME.findall(own) if not words & set(re.findall(r"\w+", x.lower()))]
        pool = [x for x in set(_NAME.findall(others)) - set(_NAME.findall(own))
                if not words & set(re.findall(r"\w+", x.lower()))]
        wrong += [("name", x) for x in _sample(pool, rng)]
        wrong += [("name, same block", x) for x in _sample(unrelated, rng)]
    return wrong


def _sample(pool, rng: random.Random) -> list[str]:
    pool = sorted(set(pool))
    return rng.sample(pool, min(PER_KIND, len(pool)))


def _replace_last(text: str, old: str, new: str) -> str:
    at = text.rfind(old)
    return text[:at] + new + text[at + len(old):]


def _gold_block(r: dict, docs: dict) -> tuple[str, str]:
    for page, text in docs[r["source"]]:
        if page == r["page"] and r["gold"].lower() in _flat(text).lower():
            return (r["source"] if page is None else f"{r['source']} p.{page}"), text
    raise SystemExit(f"{r['id']}: gold answer {r['gold']!r} not found in {r['source']}")


def _gold_sentence(gold: str, blocks: list[tuple[str, str]]) -> str:
    from docbot.rag.text import split_sentences

    for sentence in split_sentences("\n".join(t for _, t in blocks)):
        if gold.lower() in sentence.lower():
            return sentence
    return gold


def _flat(text: str) -> str:
    return " ".join(text.split())


def _sentences(text: str) -> list[str]:
    text = _flat(text)
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text) if s]


if __name__ == "__main__":
    main()
