"""Did fine-tuning help? The four-arm evaluation, run through the chat's own answer path.

`evaluate(asker, ...)` runs {base, fine-tuned} x {no retrieval, retrieval} (the base arms alone when no fine-tuned
version exists yet) on held-out question sets, reported apart (`heldout`), or on a user's JSONL of
question/answer pairs; `test` names the domain's `eval_sets/<domain>_test.jsonl`. Every answer comes from
`asker.ask`, the same path as a user's question (same prompt, decoding, guards and token limit), with a fresh
conversation per question; the arms differ only in the model and whether retrieval is on. Per arm: exact match,
token F1 and ROUGE-L against the gold answer, and for the retrieval arms hit@k and MRR of the gold source, each
with a seeded bootstrap 95% interval. A retrieval report compares vector-only and hybrid retrieval. The report
(`report`) names the model version; nothing registered is rewritten.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from ..config import Config
from ..errors import DocbotError
from ..files import sha256_file, write_json_atomic
from ..providers import Provider
from ..rag.answers import Answer
from ..rag.conversation import Conversation
from ..rag.guards import count_loops
from ..rag.retrieval import Source
from . import finetuned
from .heldout import QuestionSet, held_out_paraphrases, validation_questions
from .registry import ModelVersion, list_versions
from .report import EvaluationReport, new_report_dir, write_chart
from .scoring import (N_BOOTSTRAP, bootstrap_interval, contains_answer, exact_match, hit_at_k, load_questions,
                      paired_difference, reciprocal_rank, rouge_l, token_f1)

__all__ = ["Asker", "ARMS", "DEFAULT_SETS", "evaluate"]

ARMS = ("base", "base+retrieval", "fine-tuned", "fine-tuned+retrieval")
DEFAULT_SETS = ("paraphrases", "validation")
DIFFERENCE_METRICS = ("accuracy", "f1", "declined")  # compared question by question, fine-tuned against base
RETRIEVAL_DEPTHS = (1, 3, 5)


class Asker(Protocol):
    """What the evaluation needs of a bot: its answer path and its retrieval (`ConfigurableDocBot` is one)."""

    def ask(self, question: str, k: int | None = None, stream: bool = False, *, retrieval: bool = True,
            hybrid: bool | None = None, model: Provider | None = None,
            conversation: Conversation | None = None) -> Answer: ...

    def retrieve(self, question: str, k: int | None = None, hybrid: bool | None = None) -> list[Source]: ...


def evaluate(asker: Asker, questions: str | Path | None = None, *, domain: str, config: Config,
             in_use: ModelVersion | None = None, sets: Sequence[str] = DEFAULT_SETS,
             version: str | Path | None = None, k: int | None = None, depth: int = 5, n_bootstrap: int = N_BOOTSTRAP,
             seed: int = 0, retrieval_questions: str | Path | None = None,
             evaluations_dir: str | Path | None = None, progress: bool = True) -> EvaluationReport:
    """Run the arms on the held-out sets (or on the JSONL file `questions`), write the report and chart.

    `sets`: "paraphrases" (a), "validation" (b), "test" (the domain's `eval_sets/<domain>_test.jsonl`) or paths
    of JSONL files. `version`: the fine-tuned model (default: `in_use`, else the domain's newest; with none, the
    base arms run alone). `k` blocks go to the model (default: the config's top_k); retrieval is ranked `depth`
    deep for MRR. Reports go to `evaluations_dir` (default `evaluations/` beside the data folder).
    """
    k = k or config.top_k
    depth = max(depth, k)
    target = _target_version(version, in_use, config, domain)
    notes: list[str] = []
    names = [str(questions)] if questions is not None else list(sets)
    card = _card_for(target, config, domain, notes) if any(n in ("paraphrases", "validation") for n in names) \
        else None
    if card is None and questions is None:
        names = [n for n in names if n not in ("paraphrases", "validation")] or ["test"]
        notes.append("no prepared dataset, so no held-out sets: evaluated on the domain's test questions")
    question_sets = [qs for qs in _question_sets(names, card, config, domain, notes) if qs.questions]
    if not question_sets:
        raise DocbotError("nothing to evaluate: every question set is empty (prepare data with the chat format "
                          "and a domain of two or more documents, or pass a JSONL file of questions)")
    arms = ARMS if target is not None else ARMS[:2]
    if target is None:
        notes.append(f"no fine-tuned version of '{domain}' yet: the base arms ran alone")
    models = {"base": finetuned.base_provider(target, config) if target else None,
              "fine-tuned": finetuned.load(target, config) if target else None}

    ranked = {q.question: asker.retrieve(q.question, depth) for qs in question_sets for q in qs.questions}
    replies: list[dict[str, list[Answer]]] = [{arm: [] for arm in arms} for _ in question_sets]
    labels = {}
    from tqdm.auto import tqdm

    with tqdm(total=sum(len(qs.questions) for qs in question_sets) * len(arms), desc="Evaluating", unit="answer",
              file=sys.stderr, disable=not progress) as bar:
        for arm in arms:
            model = models["fine-tuned" if arm.startswith("fine-tuned") else "base"]
            _seed_everything(seed)
            for i, qs in enumerate(question_sets):
                bar.set_postfix_str(f"{arm} on {qs.name}")
                for q in qs.questions:  # off-topic questions too: does the arm decline them?
                    answer = asker.ask(q.question, k, retrieval=arm.endswith("+retrieval"), model=model,
                                       conversation=Conversation(max_turns=0))
                    replies[i][arm].append(answer)
                    labels[arm.split("+")[0]] = labels.get(arm.split("+")[0]) or answer.model or None
                    bar.update()

    set_reports = [_score_set(qs, answers, ranked, arms, k, depth, n_bootstrap, seed)
                   for qs, answers in zip(question_sets, replies)]
    base_name = target.manifest["adapter"]["base_model"]["name"] if target else labels.get("base")
    data = {
        "schema_version": 2, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "domain": domain,
        "model": {"version": target.name if target else None, "path": str(target.path) if target else None,
                  "adapter_sha256": target.manifest.get("adapter_sha256") if target else None,
                  "registered_at": target.manifest.get("registered_at") if target else None,
                  "base_model": base_name, "base_label": labels.get("base"),
                  "fine_tuned_label": labels.get("fine-tuned"), "dataset_card": card.name if card else None},
        "settings": {"k": k, "depth": depth, "max_new_tokens": config.max_new_tokens, "seed": seed,
                     "decoding": "greedy, through the chat's answer path", "n_bootstrap": n_bootstrap,
                     "interval": "percentile bootstrap, 95%", "hybrid_search": config.hybrid_search,
                     "relevance_threshold": config.relevance_threshold,
                     "normalisation": "SQuAD (lower case, no punctuation, no articles)"},
        "arms": list(arms), "sets": set_reports,
        "retrieval": _retrieval_report(asker, questions, retrieval_questions, question_sets, config, domain,
                                       n_bootstrap, seed, notes),
        "notes": notes,
    }
    folder = new_report_dir(Path(evaluations_dir) if evaluations_dir is not None
                            else Path(config.data_dir).parent / "evaluations", domain)
    report = EvaluationReport(data, folder / "report.json", None, notes)
    try:
        write_chart(data, folder / "chart.png")
        report.chart = folder / "chart.png"
        data["chart"] = "chart.png"
    except ImportError:
        notes.append("matplotlib is not installed, so no chart.png (pip install matplotlib)")
    write_json_atomic(folder / "report.json", data)
    return report


def _target_version(version, in_use: ModelVersion | None, config: Config, domain: str) -> ModelVersion | None:
    if version is not None:
        target = finetuned.resolve(version, config, domain)
        if not isinstance(target, ModelVersion):
            raise DocbotError(f"{version}: evaluation compares a registered fine-tuned version with its base; "
                              f"pass a version (see `models`) or an adapter folder or zip")
        return target
    if in_use is not None:
        return in_use
    versions = list_versions(config.models_dir, domain)
    return versions[0] if versions else None


def _card_for(target: ModelVersion | None, config: Config, domain: str, notes: list[str]) -> Path | None:
    """The dataset card the version was trained on (by its recorded hash), else the domain's newest, else None."""
    wanted = target.manifest["adapter"].get("dataset", {}).get("card_sha256") if target else None
    cards = sorted(Path(config.data_dir).glob(f"dataset_card_{domain}_*.json"),
                   key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for card in cards:
        if wanted and sha256_file(card) == wanted:
            return card
    if not cards:
        return None
    if target is not None:
        notes.append(f"the dataset card {target.name} was trained on is not in {config.data_dir}; "
                     f"used the newest, {cards[0].name}")
    return cards[0]


def _question_sets(names: list[str], card: Path | None, config: Config, domain: str,
                   notes: list[str]) -> list[QuestionSet]:
    out = []
    for name in names:
        if name == "paraphrases":
            qs = QuestionSet("paraphrases", "(a) paraphrases of the training questions",
                             tuple(held_out_paraphrases(card)))
        elif name == "validation":
            qs = QuestionSet("validation", "(b) questions on the validation documents",
                             tuple(validation_questions(card)))
        elif name == "test":
            path = _test_set(config, domain)
            if path is None:
                raise DocbotError(f"no test questions for domain '{domain}' (eval_sets/{domain}_test.jsonl); "
                                  f"pass a JSONL file of question/answer pairs")
            qs = QuestionSet("test", f"test questions {path}", tuple(load_questions(path)))
        else:
            qs = QuestionSet(Path(name).stem, f"questions from {name}", tuple(load_questions(name)))
        if not qs.questions:
            notes.append(f"{qs.description}: no questions, skipped")
        out.append(qs)
    return out


def _test_set(config: Config, domain: str) -> Path | None:
    for folder in (Path(config.data_dir).parent / "eval_sets", Path("eval_sets")):
        if (folder / f"{domain}_test.jsonl").is_file():
            return folder / f"{domain}_test.jsonl"
    return None


def _score_set(qs: QuestionSet, answers: dict[str, list[Answer]], ranked, arms, k, depth, n_bootstrap,
               seed) -> dict:
    """Per arm: the answer metrics and wrong declines on the answerable questions, the decline rate on the
    off-topic ones (retrieval arms: without blocks nothing declines), and loops on all of them."""
    group = [q for q in qs.questions if q.answer is not None]
    off_topic = [j for j, q in enumerate(qs.questions) if q.answer is None]
    scored, raw = {}, {}
    for arm in arms:
        replies = [a for a, q in zip(answers[arm], qs.questions) if q.answer is not None]
        scores = {m: [fn(a.text, q.answer) for a, q in zip(replies, group)]
                  for m, fn in (("accuracy", contains_answer), ("exact_match", exact_match), ("f1", token_f1),
                                ("rouge_l", rouge_l))}
        if arm.endswith("+retrieval"):
            with_source = [q for q in group if q.source]
            scores["hit_at_k"] = [hit_at_k(ranked[q.question], q, k) for q in with_source]
            scores["mrr"] = [reciprocal_rank(ranked[q.question][:depth], q) for q in with_source]
            scores["wrongly_declined"] = [float(not a.covered) for a in replies]
            scores["declined"] = [float(not answers[arm][j].covered) for j in off_topic]
        raw[arm] = scores
        scored[arm] = {m: bootstrap_interval(v, n_bootstrap, seed) for m, v in scores.items()}
        scored[arm]["raw_loops"] = sum(count_loops(a.guard.raw) > 0 for a in answers[arm])
        scored[arm]["guard_fired"] = sum(bool(a.guard.fired) for a in answers[arm])
    differences = {f"{tuned} - {base}": {m: paired_difference(raw[tuned][m], raw[base][m], n_bootstrap, seed)
                                         for m in DIFFERENCE_METRICS if raw[tuned].get(m)}
                   for tuned, base in (("fine-tuned+retrieval", "base+retrieval"), ("fine-tuned", "base"))
                   if tuned in raw}
    return {"name": qs.name, "description": qs.description, "n": len(group), "off_topic": len(off_topic),
            "skipped": len(off_topic), "arms": scored, "differences": differences,
            "questions": [{"id": q.id, "question": q.question, "answer": q.answer, "source": q.source,
                           "page": q.page, "retrieved": [str(s) for s in ranked[q.question][:depth]],
                           "predictions": {arm: answers[arm][j].text for arm in arms}}
                          for j, q in enumerate(qs.questions)]}


def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def _retrieval_report(asker: Asker, questions, retrieval_questions, question_sets, config: Config, domain: str,
                      n_bootstrap: int, seed: int, notes: list[str]) -> dict | None:
    """hit@d and MRR@d of vector-only and hybrid retrieval on the test questions (else the evaluated ones)."""
    path = retrieval_questions or _test_set(config, domain) or questions
    if path is not None:
        gold, described = [q for q in load_questions(path) if q.source], str(path)
    else:
        gold = list({q.question: q for qs in question_sets for q in qs.questions if q.source}.values())
        described = "the evaluated questions"
    if not gold:
        notes.append(f"no question with a gold source in {described}: no retrieval report")
        return None
    modes = {}
    for mode, hybrid in (("vector", False), ("hybrid", True)):
        ranked = [asker.retrieve(q.question, max(RETRIEVAL_DEPTHS), hybrid=hybrid) for q in gold]
        scores = {}
        for d in RETRIEVAL_DEPTHS:
            scores[f"hit@{d}"] = bootstrap_interval([hit_at_k(r, q, d) for r, q in zip(ranked, gold)],
                                                    n_bootstrap, seed)
            scores[f"mrr@{d}"] = bootstrap_interval([reciprocal_rank(r[:d], q) for r, q in zip(ranked, gold)],
                                                    n_bootstrap, seed)
        modes[mode] = scores
    return {"questions": described, "n": len(gold), "depths": list(RETRIEVAL_DEPTHS), "modes": modes,
            "in_use": "hybrid" if config.hybrid_search else "vector"}
