"""Did fine-tuning help? The four-arm evaluation, its held-out question sets and its report (metrics: scoring.py).

`evaluate(bot)` runs {base, fine-tuned} x {no retrieval, retrieval} on held-out question sets, reported apart:

- (a) `paraphrases`: the training questions in other words (the dataset card's paraphrases where the LLM generator
  wrote them, else model-free rewordings), none equal to a training question: did the model learn the facts?
- (b) `validation`: the questions generated from the validation documents, which training never saw: does the
  model answer better from context?
- or a user's JSONL of question/answer pairs (`load_questions`); `test` names the domain's
  `eval_sets/<domain>_test.jsonl`.

Every arm decodes greedily with the same seed and the same retrieved blocks, so the arms differ only in the model
and whether it sees the blocks. Per arm: exact match, token F1 and ROUGE-L against the gold answer (SQuAD's
normalisation), and for the retrieval arms hit@k and MRR of the gold source, each with a seeded bootstrap 95%
interval (small sets mislead). A retrieval report compares vector-only and hybrid retrieval on the domain's test
questions. The report goes to `evaluations/<stamp>/report.json` (naming the model version; nothing registered is
rewritten) with `chart.png`, and `EvaluationReport.table()` is the terminal view.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DocbotError
from .retrieval import Source
from .scoring import (N_BOOTSTRAP, GoldQuestion, bootstrap_interval, exact_match, hit_at_k, load_questions,
                      normalize_answer, reciprocal_rank, rouge_l, token_f1)

__all__ = ["QuestionSet", "EvaluationReport", "ARMS", "paraphrase", "held_out_paraphrases", "validation_questions",
           "evaluate", "list_evaluations"]

ARMS = ("base", "base+retrieval", "fine-tuned", "fine-tuned+retrieval")
ANSWER_METRICS = ("exact_match", "f1", "rouge_l")
RETRIEVAL_METRICS = ("hit_at_k", "mrr")
DEFAULT_SETS = ("paraphrases", "validation")
RETRIEVAL_DEPTHS = (1, 3, 5)


# -- held-out question sets ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuestionSet:
    """Questions evaluated together and reported apart."""

    name: str
    description: str
    questions: tuple[GoldQuestion, ...]


_COPULA_Q = re.compile(r"^(?P<wh>What|Who) (?P<verb>is|are|was|were) (?P<rest>.+)\?$")
_MODAL_Q = re.compile(r"^(?P<wh>When|Where|By whom|For how long|How long|How often) (?P<modal>must|should|can|may|"
                      r"will|do|does) (?P<subject>.+?) (?P<tail>be \w+|\w+)\?$")
_SECTION_Q = re.compile(r'^What does the section "(?P<heading>.+)" say\?$')


def paraphrase(question: str) -> str:
    """A model-free, deterministic rewording of a question (the rules generator's shapes get a real rewording,
    anything else a polite framing). Never returns the question itself.

    "What is the maximum daily dose of X?" -> "Tell me the maximum daily dose of X."
    "Who is the chief pharmacist?"         -> "Tell me who the chief pharmacist is."
    "When must the vaccine be stored?"     -> "Tell me when the vaccine must be stored."
    'What does the section "Fire" say?'    -> 'Summarise the section "Fire".'
    """
    q = " ".join(question.split())
    if m := _SECTION_Q.match(q):
        return f'Summarise the section "{m["heading"]}".'
    if m := _COPULA_Q.match(q):
        if m["wh"] == "What":
            return f"Tell me {m['rest']}."
        return f"Tell me who {m['rest']} {m['verb']}."
    if m := _MODAL_Q.match(q):
        if m["modal"] in ("do", "does"):
            return f"Tell me {m['wh'].lower()} {m['subject']} {m['tail']}{'s' if m['modal'] == 'does' else ''}."
        return f"Tell me {m['wh'].lower()} {m['subject']} {m['modal']} {m['tail']}."
    return f"I would like to know this: {q[:1].lower() + q[1:]}"


def _card_rows(card_path: Path, split: str) -> list[dict]:
    """The non-RAFT rows of one split as question/answer/source/page, from whichever format the card has."""
    card = json.loads(card_path.read_text(encoding="utf-8"))
    from .prompts import QUESTION_LEAD

    for fmt in ("qa", "chat", "instruction"):
        name = next((n for n in card["files"] if n.startswith(f"{fmt}_data_") and n.endswith(f"_{split}.jsonl")), None)
        if name is None or not (card_path.parent / name).is_file():
            continue
        rows, seen = [], set()
        for line in (card_path.parent / name).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("raft"):
                continue
            if fmt == "qa":
                question, answer = row["question"], row["answer"]
            elif fmt == "chat":
                question, answer = row["messages"][-2]["content"], row["messages"][-1]["content"]
            else:
                question, answer = row["input"], row["output"]
            question = question.rsplit(QUESTION_LEAD, 1)[-1].strip()
            if question not in seen:
                seen.add(question)
                rows.append({"question": question, "answer": answer, "source": row.get("source"),
                             "page": row.get("page")})
        return rows
    raise DocbotError(f"{card_path.name}: none of its data files for the {split} split is on disk")


def held_out_paraphrases(card_path: str | Path) -> list[GoldQuestion]:
    """Set (a): the training questions reworded (the card's LLM paraphrases where present, else `paraphrase`);
    any rewording equal to a training question (after normalisation) is dropped."""
    card_path = Path(card_path)
    card = json.loads(card_path.read_text(encoding="utf-8"))
    train = _card_rows(card_path, "train")
    written = {}
    for p in card.get("held_out_paraphrases", []):
        if p.get("question"):
            written.setdefault((p["answer"], p["source"], p["page"]), p["question"])
    asked = {normalize_answer(r["question"]) for r in train}
    out, seen = [], set()
    for n, row in enumerate(train, start=1):
        text = written.get((row["answer"], row["source"], row["page"])) or paraphrase(row["question"])
        key = normalize_answer(text)
        if key in asked or key in seen:
            text = paraphrase(row["question"])
            key = normalize_answer(text)
            if key in asked or key in seen:
                continue
        seen.add(key)
        out.append(GoldQuestion(f"paraphrase-{n}", text, row["answer"], row["source"], row["page"]))
    return out


def validation_questions(card_path: str | Path) -> list[GoldQuestion]:
    """Set (b): the questions generated from the validation documents (the split training never saw)."""
    card_path = Path(card_path)
    card = json.loads(card_path.read_text(encoding="utf-8"))
    held = {s["file"] for s in card["sources"] if s["split"] == "validation"}
    return [GoldQuestion(f"validation-{n}", r["question"], r["answer"], r["source"], r["page"])
            for n, r in enumerate(_card_rows(card_path, "validation"), start=1) if r["source"] in held]


# -- the report ----------------------------------------------------------------------------------------------------

_LABELS = {"exact_match": "EM", "f1": "F1", "rouge_l": "ROUGE-L", "hit_at_k": "hit@{k}", "mrr": "MRR@{depth}"}


@dataclass
class EvaluationReport:
    """What `evaluate` measured; `data` is the JSON written to `path`, `chart` the PNG beside it."""

    data: dict
    path: Path | None = None
    chart: Path | None = None
    notes: list[str] = field(default_factory=list)

    def arm(self, set_name: str, arm: str) -> dict:
        """The metrics of one arm on one set: {metric: {"mean", "low", "high", "n"}}."""
        return next(s for s in self.data["sets"] if s["name"] == set_name)["arms"][arm]

    def table(self) -> str:
        """The terminal view: one block per question set, one row per arm, then the retrieval report."""
        settings = self.data["settings"]
        label = {m: _LABELS[m].format(**settings) for m in _LABELS}
        cell = 21
        lines = [f"Evaluation of {self.data['model']['version']} against its base {self.data['model']['base_model']} "
                 f"on domain '{self.data['domain']}' (greedy, seed {settings['seed']}, {settings['k']} block(s), "
                 f"95% bootstrap intervals from {settings['n_bootstrap']} resamples)"]
        for s in self.data["sets"]:
            lines += ["", f"{s['description']}: {s['n']} question(s)" +
                      (f", {s['skipped']} without a gold answer skipped" if s.get("skipped") else "")]
            metrics = [*ANSWER_METRICS, *RETRIEVAL_METRICS]
            lines.append((f"  {'arm':<22}" + "".join(f"{label[m]:<{cell}}" for m in metrics)).rstrip())
            for arm in ARMS:
                row = s["arms"][arm]
                lines.append(f"  {arm:<22}" + "".join(f"{_fmt_ci(row.get(m)):<{cell}}" for m in metrics).rstrip())
        r = self.data.get("retrieval")
        if r:
            lines += ["", f"Retrieval on {r['questions']} ({r['n']} question(s) with a gold source)",
                      (f"  {'mode':<22}" + "".join(f"{f'hit@{d}':<{cell}}{f'MRR@{d}':<{cell}}"
                                                    for d in r["depths"])).rstrip()]
            for mode, scores in r["modes"].items():
                lines.append(f"  {mode:<22}" + "".join(
                    f"{_fmt_ci(scores[f'hit@{d}']):<{cell}}{_fmt_ci(scores[f'mrr@{d}']):<{cell}}"
                    for d in r["depths"]).rstrip())
        for note in self.data.get("notes", []):
            lines.append(f"note: {note}")
        if self.path:
            lines += ["", f"report: {self.path}" + (f"   chart: {self.chart}" if self.chart else "")]
        return "\n".join(lines)

    __str__ = table


def _fmt_ci(ci: dict | None) -> str:
    if not ci or ci.get("mean") is None:
        return "-"
    return f"{ci['mean']:.3f} [{ci['low']:.2f},{ci['high']:.2f}]"


def list_evaluations(folder: str | Path, version: str | None = None) -> list[tuple[Path, dict]]:
    """Written reports (`<folder>/<stamp>/report.json`), newest first, optionally only those of one model
    version (by name, e.g. `medical_finetuned_v1.0.0`): how a registry entry finds its evaluations."""
    found = []
    for path in Path(folder).glob("*/report.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if version is None or data.get("model", {}).get("version") == Path(version).name:
            found.append((path, data))
    return sorted(found, key=lambda item: item[1].get("created_at", ""), reverse=True)


# -- the four arms --------------------------------------------------------------------------------------------------


def evaluate(bot, questions: str | Path | None = None, *, sets: Sequence[str] = DEFAULT_SETS,
             version: str | Path | None = None, k: int | None = None, depth: int = 5, max_new_tokens: int = 48,
             n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, retrieval_questions: str | Path | None = None,
             evaluations_dir: str | Path | None = None, progress: bool = True) -> EvaluationReport:
    """Run the four arms on the held-out sets (or on the JSONL file `questions`), write the report and chart.

    `sets` names what to run when no file is given: "paraphrases" (a), "validation" (b), "test" (the domain's
    `eval_sets/<domain>_test.jsonl`) or paths of JSONL files. `version`: the fine-tuned model (default: the one in
    use, else the domain's newest). `k` blocks go to the model (default: the config's top_k); retrieval is ranked
    `depth` deep for MRR. Reports go to `evaluations_dir` (default `evaluations/` beside the data folder).
    The bot is left with the model it had.
    """
    from .registry import ModelVersion

    domain = bot._require_domain()
    k = k or bot.config.top_k
    depth = max(depth, k)
    target = _target_version(bot, version)
    if not isinstance(target, ModelVersion):
        raise DocbotError(f"{version}: evaluation compares a registered fine-tuned version with its base; "
                          f"pass a version (see `models`) or an adapter folder or zip")
    notes: list[str] = []
    card = _card_for(bot, target, notes) if questions is None and any(
        s in ("paraphrases", "validation") for s in sets) else None
    question_sets = _question_sets(bot, domain, [str(questions)] if questions is not None else list(sets), card)
    for qs in question_sets:
        if not qs.questions:
            notes.append(f"{qs.description}: no questions, skipped")
    question_sets = [qs for qs in question_sets if qs.questions]
    if not question_sets:
        raise DocbotError("nothing to evaluate: every question set is empty (prepare data with the chat format "
                          "and a domain of two or more documents, or pass a JSONL file of questions)")

    retriever = bot._require_retriever()
    answerable = [[q for q in qs.questions if q.answer is not None] for qs in question_sets]
    retrieved: dict[str, list[Source]] = {}
    for q in (q for group in answerable for q in group):
        if q.question not in retrieved:
            retrieved[q.question] = retriever.search(q.question, depth)

    providers = _arm_providers(bot, target)
    total = sum(len(a) for a in answerable) * len(ARMS)
    predictions: list[dict[str, list[str]]] = [{arm: [] for arm in ARMS} for _ in question_sets]
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="Evaluating", unit="answer", file=sys.stderr, disable=not progress) as bar:
        for arm in ARMS:
            provider = providers["fine-tuned" if arm.startswith("fine-tuned") else "base"]
            _seed_everything(seed)
            for i, group in enumerate(answerable):
                bar.set_postfix_str(f"{arm} on {question_sets[i].name}")
                for q in group:
                    predictions[i][arm].append(_answer(bot, provider, q.question, retrieved[q.question] if
                                                       arm.endswith("+retrieval") else None, k, max_new_tokens))
                    bar.update()

    set_reports = []
    for qs, group, preds in zip(question_sets, answerable, predictions):
        arms = {}
        for arm in ARMS:
            scores = {m: [fn(p, q.answer) for p, q in zip(preds[arm], group)]
                      for m, fn in (("exact_match", exact_match), ("f1", token_f1), ("rouge_l", rouge_l))}
            if arm.endswith("+retrieval"):
                with_source = [q for q in group if q.source]
                scores["hit_at_k"] = [hit_at_k(retrieved[q.question], q, k) for q in with_source]
                scores["mrr"] = [reciprocal_rank(retrieved[q.question][:depth], q) for q in with_source]
            arms[arm] = {m: bootstrap_interval(v, n_bootstrap, seed) for m, v in scores.items()}
        set_reports.append({
            "name": qs.name, "description": qs.description, "n": len(group),
            "skipped": len(qs.questions) - len(group), "arms": arms,
            "questions": [{"id": q.id, "question": q.question, "answer": q.answer, "source": q.source,
                           "page": q.page, "retrieved": [str(s) for s in retrieved[q.question][:depth]],
                           "predictions": {arm: preds[arm][j] for arm in ARMS}} for j, q in enumerate(group)]})

    retrieval = _retrieval_report(bot, domain, questions, retrieval_questions, question_sets, n_bootstrap, seed,
                                  notes)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    base_name = target.manifest["adapter"]["base_model"]["name"]
    data = {
        "schema_version": 1, "created_at": created, "domain": domain,
        "model": {"version": target.name, "path": str(target.path), "adapter_sha256": target.manifest.get(
            "adapter_sha256"), "registered_at": target.manifest.get("registered_at"), "base_model": base_name,
            "base_label": str(providers["base"]), "fine_tuned_label": str(providers["fine-tuned"]),
            "dataset_card": card.name if card else None},
        "settings": {"k": k, "depth": depth, "max_new_tokens": max_new_tokens, "seed": seed, "decoding": "greedy",
                     "n_bootstrap": n_bootstrap, "interval": "percentile bootstrap, 95%",
                     "hybrid_search": retriever.hybrid, "relevance_threshold": bot.config.relevance_threshold,
                     "normalisation": "SQuAD (lower case, no punctuation, no articles)"},
        "arms": list(ARMS), "sets": set_reports, "retrieval": retrieval, "notes": notes,
    }
    folder = _new_report_dir(Path(evaluations_dir) if evaluations_dir is not None
                             else Path(bot.config.data_dir).parent / "evaluations", domain)
    report = EvaluationReport(data, folder / "report.json", None, notes)
    try:
        _write_chart(data, folder / "chart.png")
        report.chart = folder / "chart.png"
        data["chart"] = "chart.png"
    except ImportError:
        notes.append("matplotlib is not installed, so no chart.png (pip install matplotlib)")
    from ._io import write_json_atomic

    write_json_atomic(folder / "report.json", data)
    return report


def _target_version(bot, version):
    if version is not None:
        return bot._resolve_fine_tuned(version)
    if bot.fine_tuned is not None:
        return bot.fine_tuned
    return bot._resolve_fine_tuned(None)


def _card_for(bot, target, notes: list[str]) -> Path:
    """The dataset card the version was trained on (by its recorded hash), else the domain's newest."""
    from ._io import sha256_file

    wanted = target.manifest["adapter"].get("dataset", {}).get("card_sha256")
    cards = sorted(Path(bot.config.data_dir).glob(f"dataset_card_{target.domain}_*.json"),
                   key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for card in cards:
        if wanted and sha256_file(card) == wanted:
            return card
    newest = bot._latest_card(bot._require_domain())
    notes.append(f"the dataset card {target.name} was trained on is not in {bot.config.data_dir}; "
                 f"used the newest, {newest.name}")
    return newest


def _question_sets(bot, domain: str, names: list[str], card: Path | None) -> list[QuestionSet]:
    out = []
    for name in names:
        if name == "paraphrases":
            out.append(QuestionSet("paraphrases", "(a) paraphrases of the training questions",
                                   tuple(held_out_paraphrases(card))))
        elif name == "validation":
            out.append(QuestionSet("validation", "(b) questions on the validation documents",
                                   tuple(validation_questions(card))))
        elif name == "test":
            path = _test_set(bot, domain)
            if path is None:
                raise DocbotError(f"no test questions for domain '{domain}' (eval_sets/{domain}_test.jsonl)")
            out.append(QuestionSet("test", f"test questions {path}", tuple(load_questions(path))))
        else:
            out.append(QuestionSet(Path(name).stem, f"questions from {name}", tuple(load_questions(name))))
    return out


def _test_set(bot, domain: str) -> Path | None:
    for folder in (Path(bot.config.data_dir).parent / "eval_sets", Path("eval_sets")):
        if (folder / f"{domain}_test.jsonl").is_file():
            return folder / f"{domain}_test.jsonl"
    return None


def _arm_providers(bot, target) -> dict:
    """The adapter's own base model and the fine-tuned model (probe-checked by the switch); the bot keeps the
    model it had."""
    from .providers import TransformersProvider

    base = target.manifest["adapter"]["base_model"]
    saved = (bot.config, bot._model_choice, bot._provider, bot.fine_tuned)
    try:
        tuned = bot.switch_to_fine_tuned_model(str(target.path))
    finally:
        bot.config, bot._model_choice, bot._provider, bot.fine_tuned = saved
    return {"base": TransformersProvider(bot._checked_base(base, target.name), label=base["name"]),
            "fine-tuned": tuned}


def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def _answer(bot, provider, question: str, sources: list[Source] | None, k: int, max_new_tokens: int) -> str:
    """One arm's answer: the question alone, or the bot's prompt with the top `k` blocks above the relevance
    threshold (none: the bot's not-covered reply, as a user would get)."""
    from .prompts import NOT_COVERED, build_messages, build_messages_without_context

    if sources is None:
        messages = build_messages_without_context(question)
    else:
        relevant = [s for s in sources[:k] if s.score >= bot.config.relevance_threshold]
        if not relevant:
            return NOT_COVERED.format(domain=bot.domain)
        messages = build_messages(question, relevant)
    return provider.generate(messages, max_new_tokens).strip()


def _retrieval_report(bot, domain, questions, retrieval_questions, question_sets, n_bootstrap, seed,
                      notes) -> dict | None:
    """hit@d and MRR@d of vector-only and hybrid retrieval on the test questions (else the evaluated ones)."""
    path = retrieval_questions or _test_set(bot, domain) or questions
    if path is not None:
        gold, described = [q for q in load_questions(path) if q.source], str(path)
    else:
        gold = list({q.question: q for qs in question_sets for q in qs.questions if q.source}.values())
        described = "the evaluated questions"
    if not gold:
        notes.append(f"no question with a gold source in {described}: no retrieval report")
        return None
    retriever = bot._require_retriever()
    was = retriever.hybrid
    modes = {}
    try:
        for mode, hybrid in (("vector", False), ("hybrid", True)):
            retriever.hybrid = hybrid
            ranked = [retriever.search(q.question, max(RETRIEVAL_DEPTHS)) for q in gold]
            scores = {}
            for d in RETRIEVAL_DEPTHS:
                scores[f"hit@{d}"] = bootstrap_interval([hit_at_k(r, q, d) for r, q in zip(ranked, gold)],
                                                        n_bootstrap, seed)
                scores[f"mrr@{d}"] = bootstrap_interval([reciprocal_rank(r[:d], q) for r, q in zip(ranked, gold)],
                                                        n_bootstrap, seed)
            modes[mode] = scores
    finally:
        retriever.hybrid = was
    return {"questions": described, "n": len(gold), "depths": list(RETRIEVAL_DEPTHS), "modes": modes,
            "in_use": "hybrid" if was else "vector"}


def _new_report_dir(root: Path, domain: str) -> Path:
    """`<root>/<domain>_<UTC time>/`, with a suffix when taken: no report is overwritten."""
    base = f"{domain}_{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = root / (base if n == 1 else f"{base}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise DocbotError(f"{root}: cannot make a new report folder for {base}")


def _write_chart(data: dict, path: Path) -> None:
    """Grouped bars, one panel per question set (plus retrieval): each arm's metrics with their intervals."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    settings = data["settings"]
    label = {m: _LABELS[m].format(**settings) for m in _LABELS}
    panels = len(data["sets"]) + bool(data.get("retrieval"))
    fig = Figure(figsize=(11, 3.6 * panels), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    colours = {"base": "#9ecae1", "base+retrieval": "#3182bd", "fine-tuned": "#fdae6b",
               "fine-tuned+retrieval": "#e6550d", "vector": "#a1d99b", "hybrid": "#31a354"}

    def bars(ax, groups: list[str], series: dict[str, list[dict | None]], title: str) -> None:
        width = 0.8 / len(series)
        for i, (name, cis) in enumerate(series.items()):
            xs, means, errs = [], [], [[], []]
            for g, ci in enumerate(cis):
                if ci and ci.get("mean") is not None:
                    xs.append(g - 0.4 + width * (i + 0.5))
                    means.append(ci["mean"])
                    errs[0].append(max(0.0, ci["mean"] - ci["low"]))
                    errs[1].append(max(0.0, ci["high"] - ci["mean"]))
            ax.bar(xs, means, width, yerr=errs, capsize=3, label=name, color=colours.get(name))
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylim(0, 1.18)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, ncol=len(series), loc="upper center")
        ax.grid(axis="y", alpha=0.3)

    metrics = [*ANSWER_METRICS, *RETRIEVAL_METRICS]
    for ax, s in zip(axes, data["sets"]):
        bars(ax, [label[m] for m in metrics], {arm: [s["arms"][arm].get(m) for m in metrics] for arm in ARMS},
             f"{s['description']} (n={s['n']})")
    if data.get("retrieval"):
        r = data["retrieval"]
        keys = [f"{kind}@{d}" for d in r["depths"] for kind in ("hit", "mrr")]
        bars(axes[-1], [key.replace("mrr", "MRR") for key in keys],
             {mode: [scores[key] for key in keys] for mode, scores in r["modes"].items()},
             f"retrieval: vector-only vs hybrid on {r['questions']} (n={r['n']})")
    fig.suptitle(f"{data['model']['version']} vs {data['model']['base_model']}: means with 95% bootstrap intervals",
                 fontsize=11)
    fig.savefig(path, dpi=100)
