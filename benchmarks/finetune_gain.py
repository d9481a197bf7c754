"""Does fine-tuning help? End to end on the Medical sample domain with an offline base model on CPU.

    python benchmarks/finetune_gain.py [--base-model NAME] [--steps 15] [--learning-rate LR] [--with-test]
                                       [--folds K] [--out benchmarks/_work/finetune_gain]

1. index `Documents/Medical/` into a temporary index;
2. prepare training data with the model-free `rules` generator (chat format), split by document;
3. train a LoRA adapter on `--base-model` (default: the config's BASE_MODEL, Qwen2.5-Coder-0.5B-Instruct) for a
   fixed budget of `--steps` optimizer steps with the config's parameters (learning rate, batch size, LoRA rank),
   and register it in a temporary models folder (the converted base model folder is symlinked in, not copied);
4. evaluate the four arms {base, fine-tuned} x {no retrieval, retrieval} on (a) paraphrases of the training
   questions and (b) questions on the validation documents (with `--with-test`, also on
   `eval_sets/medical_test.jsonl`, and apart its questions on the held-out documents with paired differences),
   greedy, one seed, through the chat's own answer path on llama.cpp (the adapter's GGUF LoRA over the quantized
   base; the base arms on the same runtime), and compare vector-only with hybrid retrieval on the test
   questions; print the table.

With `--folds K`, steps 2-4 run K times instead, fold i holding out every K-th document from i on: each human
test question is then asked of a model that never saw its document (60 questions, where one split held out 13),
and the base answers once; fine-tuned + retrieval minus base + retrieval is paired over all of them.

Data, index and models live in a temporary folder that is deleted at the end; the report (`report.json`,
`chart.png`) is written under `--out` (ignored by git), so the repository stays clean.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="medical")
    parser.add_argument("--base-model", default=None, help="packaged model to fine-tune (default: the config's)")
    parser.add_argument("--docs", default=str(ROOT / "Documents" / "Medical"))
    parser.add_argument("--steps", type=int, default=15,
                        help="optimizer steps of the training budget (25 = one epoch of the ~100 examples at batch 4)")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the config's")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="answer length cap per arm")
    parser.add_argument("--with-test", action="store_true", help="also run the arms on the domain's test set")
    parser.add_argument("--folds", type=int, default=0,
                        help="instead: K trainings, each holding out every K-th document, so that every human test "
                             "question is asked of a model that never saw its document (fine-tuned + retrieval "
                             "against base + retrieval)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "_work" / "finetune_gain"),
                        help="where the report folder goes")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from docbot.bot import ConfigurableDocBot
    from docbot.config import load_config
    from docbot.providers.base_models import resolve_base_model

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    started = time.monotonic()
    base_model = args.base_model or load_config().base_model
    base = Path(resolve_base_model(base_model, ROOT / "models"))  # converted once, kept in models/
    with tempfile.TemporaryDirectory(prefix="finetune_gain_") as tmp:
        tmp = Path(tmp)
        (tmp / "models").mkdir()
        (tmp / "models" / base.name).symlink_to(base)
        for joined in (ROOT / "models").glob("*.gguf*"):  # a joined GGUF and its manifest: not joined again
            (tmp / "models" / joined.name).symlink_to(joined)
        overrides = {"learning_rate": args.learning_rate} if args.learning_rate else {}
        overrides["base_model"] = base_model
        overrides["max_new_tokens"] = args.max_new_tokens  # the answer length for the chat and the evaluation alike
        bot = ConfigurableDocBot(provider="llamacpp", index_dir=str(tmp / "index"), models_dir=str(tmp / "models"),
                                 data_dir=str(tmp / "fine_tuning_data"), **overrides)
        c = bot.config
        print(f"budget: {args.steps} optimizer steps, batch {c.batch_size}, learning rate {c.learning_rate}, "
              f"LoRA r={c.lora_rank} alpha={c.lora_alpha} on {', '.join(c.lora_target_modules)}, "
              f"max_seq_length {c.max_seq_length}; base {c.base_model}; torch threads {torch.get_num_threads()}",
              flush=True)

        t = time.monotonic()
        bot.load_domain(args.domain, args.docs, progress=False)
        print(f"indexed {args.docs} in {time.monotonic() - t:.1f} s", flush=True)

        if args.folds:
            folds(bot, Path(args.docs), args.folds, args.steps, ROOT / "eval_sets" / f"{args.domain}_test.jsonl")
            print(f"\ntotal {time.monotonic() - started:.0f} s")
            return
        t = time.monotonic()
        files = bot.prepare_fine_tuning_data(formats=("chat",), generator="rules", progress=False)
        import json

        card = json.loads(Path(files["card"]).read_text(encoding="utf-8"))
        print(f"data (rules generator) in {time.monotonic() - t:.1f} s: {card['counts']['chat']['train']} train / "
              f"{card['counts']['chat']['validation']} validation examples (RAFT copies included: "
              f"{card['raft_examples']['train']} / {card['raft_examples']['validation']}); validation documents: "
              f"{', '.join(s['file'] for s in card['sources'] if s['split'] == 'validation')}", flush=True)

        t = time.monotonic()
        version = bot.train(max_steps=args.steps)
        losses = version.manifest["adapter"].get("losses", {})
        print(f"trained {version.name} in {time.monotonic() - t:.0f} s: {version.describe()}", flush=True)
        if losses:
            print(f"  losses: {json.dumps(losses)}", flush=True)

        t = time.monotonic()
        sets = ("paraphrases", "validation", "test") if args.with_test else ("paraphrases", "validation")
        report = bot.evaluate(sets=sets, evaluations_dir=args.out,
                              retrieval_questions=ROOT / "eval_sets" / f"{args.domain}_test.jsonl")
        print(f"evaluated in {time.monotonic() - t:.0f} s\n", flush=True)
        print(report.table())
        print(held_out_summary(report.data))
    print(f"\ntotal {time.monotonic() - started:.0f} s")


def folds(bot, docs: Path, k: int, steps: int, questions_file: Path) -> None:
    """Fold i holds out documents i, i+k, i+2k, ... of the sorted list: its data comes from the others, and its
    adapter answers the human test questions on the documents it never saw. Every answerable test question is so
    asked once of a tuned model, and once of the base (the same for all folds), both through the chat's answer
    path; the difference is paired over all of them."""
    from docbot import Conversation
    from docbot.rag.documents import discover
    from docbot.tuning.scoring import contains_answer, load_questions, paired_difference, token_f1

    documents = [p.relative_to(docs).as_posix() for p in discover(docs)]  # the files the index read, as cited
    questions = [q for q in load_questions(questions_file) if q.answer and q.source in documents]

    def answer(q) -> str:
        return bot.ask(q.question, conversation=Conversation(0)).text

    t = time.monotonic()
    bot.set_model("llamacpp", bot.config.base_model)  # the base the folds train, not the config's answer model
    base = {q.id: answer(q) for q in questions}
    print(f"base + retrieval: {len(questions)} test questions in {time.monotonic() - t:.0f} s", flush=True)
    tuned: dict[str, str] = {}
    for i in range(k):
        held_out = documents[i::k]
        t = time.monotonic()
        bot.prepare_fine_tuning_data(formats=("chat",), generator="rules", progress=False, held_out=held_out)
        version = bot.train(max_steps=steps)
        bot.switch_to_fine_tuned_model(version.path)
        asked = [q for q in questions if q.source in held_out]
        tuned.update({q.id: answer(q) for q in asked})
        right = sum(contains_answer(tuned[q.id], q.answer) for q in asked)
        before = sum(contains_answer(base[q.id], q.answer) for q in asked)
        print(f"fold {i + 1}/{k}: held out {', '.join(held_out)}; {version.name}; {len(asked)} questions: "
              f"answer in reply {right} tuned against {before} base ({time.monotonic() - t:.0f} s)", flush=True)
    print(f"\nAll {len(questions)} human test questions, each asked of a model that never saw its document:")
    for name, score in (("answer in reply", contains_answer), ("token F1", token_f1)):
        after = [score(tuned[q.id], q.answer) for q in questions]
        before = [score(base[q.id], q.answer) for q in questions]
        d = paired_difference(after, before)
        print(f"  {name}: base + retrieval {sum(before) / len(before):.3f}, fine-tuned + retrieval "
              f"{sum(after) / len(after):.3f}, difference {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
              + (f" (detectable {d['detectable']:.3f})" if "detectable" in d else ""))


def held_out_summary(data: dict) -> str:
    """The human-written test questions whose source is a held-out (validation) document, the ones no training
    example came from: accuracy per arm and fine-tuned minus base, paired, with the off-topic decline rate."""
    from docbot.rag.prompts import DECLINE_REPLY
    from docbot.tuning.scoring import contains_answer, paired_difference

    sets = {s["name"]: s for s in data["sets"]}
    if "test" not in sets or "validation" not in sets:
        return "(no held-out summary: run with --with-test)"
    held_out = {q["source"] for q in sets["validation"]["questions"] if q["source"]}
    questions = [q for q in sets["test"]["questions"] if q["answer"] and q["source"] in held_out]
    off_topic = [q for q in sets["test"]["questions"] if not q["answer"]]
    lines = [f"\nHuman-written test questions on the held-out documents ({', '.join(sorted(held_out))}): "
             f"{len(questions)}; off-topic: {len(off_topic)}"]
    right = {arm: [contains_answer(q["predictions"][arm], q["answer"]) for q in questions] for arm in data["arms"]}
    declined = {arm: [float(DECLINE_REPLY.lower().rstrip(".") in q["predictions"][arm].lower()) for q in off_topic]
                for arm in data["arms"]}
    for arm in data["arms"]:
        lines.append(f"  {arm:<22} answer in reply {sum(right[arm]) / max(len(questions), 1):.3f}   "
                     f"off-topic declined {sum(declined[arm]) / max(len(off_topic), 1):.3f}")
    for tuned, base in (("fine-tuned+retrieval", "base+retrieval"), ("fine-tuned", "base")):
        if tuned in right:
            for name, values in (("answer in reply", right), ("off-topic declined", declined)):
                d = paired_difference(values[tuned], values[base])
                lines.append(f"  {tuned} - {base}, {name}: {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                             + (f" (detectable {d['detectable']:.3f})" if "detectable" in d else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
