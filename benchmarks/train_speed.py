"""Training speed: docbot's LoRA training against a plain Hugging Face `Trainer` + PEFT baseline, one run.

    python benchmarks/train_speed.py [--model SmolLM2-135M-Instruct] [--steps 8] [--out benchmarks/_work/train_speed]

Both sides train the same LoRA (the config's rank, alpha, targets, learning rate and batch size) on the same chat
data, prepared by docbot from `Documents/Medical/` with the rules generator, for the same number of optimizer steps
from the same seed, so they see the same examples in the same order (neither groups by length). The baseline is
what a user would write from the Trainer and PEFT docs: chat-template tokenization with the prompt masked, dynamic
padding to the longest example of each batch (`DataCollatorForSeq2Seq`), the model's own loss.

Reported per side: answer-and-prompt tokens trained on (pad tokens excluded), seconds in the training loop,
tokens per second, and the validation loss of the result, computed by one function for both (mean NLL of the
answer tokens of the validation examples). The goal is docbot >= 1.5x the baseline's tokens per second with an
equal or lower validation loss.
"""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--model", default="SmolLM2-135M-Instruct", help="packaged base model to train")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per side")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "_work" / "train_speed"),
                        help="where report.json goes")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from docbot.bot import ConfigurableDocBot
    from docbot.providers.base_models import resolve_base_model
    from docbot.tuning import training

    hf_logging.set_verbosity_error()
    base = resolve_base_model(args.model, ROOT / "models")
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        tmp = Path(tmp)
        bot = ConfigurableDocBot(provider="transformers", answer_model="SmolLM2-135M-Instruct",
                                 index_dir=str(tmp / "index"), models_dir=str(ROOT / "models"),
                                 data_dir=str(tmp / "data"))
        bot.load_domain("medical", ROOT / "Documents" / "Medical", progress=False)
        files = bot.prepare_fine_tuning_data(formats=("chat",), generator="rules", progress=False)
        card = Path(files["card"])
        from docbot.tuning.finetuned import chat_files

        chat = chat_files(card)
        c = bot.config
        settings = dict(learning_rate=c.learning_rate, batch_size=c.batch_size, lora_rank=c.lora_rank,
                        lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                        lora_target_modules=list(c.lora_target_modules), max_seq_length=c.max_seq_length)
        validation = training.read_chat_jsonl(chat["validation"])
        print(f"{args.model}, {args.steps} steps of batch {c.batch_size}, torch threads {torch.get_num_threads()}; "
              f"data: {sum(1 for _ in open(chat['train']))} train / {len(validation)} validation examples",
              flush=True)

        rows = {}
        t = time.monotonic()
        tokens, seconds, model, tokenizer = _baseline(chat["train"], base, args.steps, settings)
        rows["plain Trainer + PEFT"] = (tokens, seconds, _validation_nll(model, tokenizer, validation))
        print(f"baseline done in {time.monotonic() - t:.0f} s", flush=True)
        del model

        t = time.monotonic()
        manifest = training.train_lora(chat["train"], None, base, tmp / "run", base_model_name=args.model,
                                       base_fingerprint=None, card_sha256=None, num_epochs=1000,
                                       max_steps=args.steps, resume=False, **settings)
        model, tokenizer = _load_adapter(base, tmp / "run" / "adapter")
        run = manifest["training"]
        rows["docbot"] = (run["tokens"], run["train_seconds"], _validation_nll(model, tokenizer, validation))
        print(f"docbot done in {time.monotonic() - t:.0f} s", flush=True)

    print(f"\n{'':22} {'tokens':>8} {'seconds':>8} {'tokens/s':>9} {'validation loss':>16}")
    for name, (tokens, seconds, loss) in rows.items():
        print(f"{name:22} {tokens:8d} {seconds:8.1f} {tokens / seconds:9.1f} {loss:16.4f}")
    speed = {name: tokens / seconds for name, (tokens, seconds, _) in rows.items()}
    ratio = speed["docbot"] / speed["plain Trainer + PEFT"]
    print(f"\ndocbot / baseline tokens per second: {ratio:.2f}x (goal >= 1.5x)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({
        "model": args.model, "steps": args.steps, "settings": settings, "ratio": round(ratio, 3),
        "rows": {k: {"tokens": v[0], "seconds": round(v[1], 2), "validation_loss": round(v[2], 4)}
                 for k, v in rows.items()}}, indent=2))


def _chat_features(tokenizer, pair, max_length):
    """input_ids with the prompt masked out of the labels, the way the Trainer docs build them."""
    prompt = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]
    full = tokenizer.apply_chat_template(pair["prompt"] + pair["completion"], tokenize=True,
                                         return_dict=True)["input_ids"][:max_length]
    return {"input_ids": full, "attention_mask": [1] * len(full),
            "labels": [-100] * len(prompt) + full[len(prompt):]}


def _baseline(train_file, base, steps, settings):
    """(non-pad tokens trained on, seconds in the loop, model, tokenizer) for the plain Trainer + PEFT recipe."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                              TrainingArguments)

    from docbot.tuning import training

    tokenizer = AutoTokenizer.from_pretrained(base)
    pairs = training.read_chat_jsonl(train_file)
    data = Dataset.from_list([_chat_features(tokenizer, p, settings["max_seq_length"]) for p in pairs])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), LoraConfig(
        r=settings["lora_rank"], lora_alpha=settings["lora_alpha"], lora_dropout=settings["lora_dropout"],
        target_modules=settings["lora_target_modules"], task_type="CAUSAL_LM"))

    class CountingTrainer(Trainer):
        tokens = 0

        def training_step(self, model, inputs, num_items_in_batch=None):
            CountingTrainer.tokens += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, num_items_in_batch)

    with tempfile.TemporaryDirectory(prefix="baseline_") as out:
        trainer = CountingTrainer(
            model=model, train_dataset=data,
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100),
            args=TrainingArguments(output_dir=out, learning_rate=settings["learning_rate"],
                                   per_device_train_batch_size=settings["batch_size"], max_steps=steps, seed=0,
                                   use_cpu=True, save_strategy="no", report_to=[], logging_strategy="no"))
        result = trainer.train()
    return CountingTrainer.tokens, float(result.metrics["train_runtime"]), model, tokenizer


def _load_adapter(base, adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, str(adapter)), AutoTokenizer.from_pretrained(str(adapter))


def _validation_nll(model, tokenizer, pairs):
    """Mean NLL of the answer tokens over all validation examples, one example at a time (no padding)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for pair in pairs:
            f = _chat_features(tokenizer, pair, 4096)
            labels = torch.tensor([f["labels"]])
            logits = model(input_ids=torch.tensor([f["input_ids"]])).logits[:, :-1]
            target = labels[:, 1:]
            keep = target != -100
            total += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
            count += int(keep.sum())
    return total / count


if __name__ == "__main__":
    main()
