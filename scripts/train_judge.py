#!/usr/bin/env python3
"""Train the judge: a cross-encoder over the bundled MiniLM that scores whether a passage answers a question.

    python3 scripts/train_judge.py [--data build/judge_data] [--out build/judge] [--pairs 9600] [--minutes 110]

Reads `scripts/build_judge_data.py`'s pairs and fine-tunes MiniLM as a cross-encoder (a fresh one-logit head; the
word embeddings frozen) on a seeded subsample with sentence-transformers' CrossEncoderTrainer and a binary
cross-entropy loss, stopping at `--minutes`. It measures accuracy on the held-out articles and writes the trained
tensors in fp16 with a manifest: base model, training data manifest, settings, time, validation figures and the
sha256 of every file (checked by `docbot.rag.judge` on load).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from docbot.files import sha256_file, write_json_atomic  # noqa: E402
from docbot.rag.embeddings import locate  # noqa: E402
from docbot.rag.judge import MAX_TOKENS, WEIGHTS, load_judge  # noqa: E402

SEED = 20261206


def _frozen(name: str) -> bool:
    return ".embeddings." in f".{name}"


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def train(data: Path, out: Path, pairs: int, minutes: float, learning_rate: float, batch: int, seed: int) -> dict:
    import numpy as np
    import torch
    from datasets import Dataset
    from safetensors.torch import save_file
    from sentence_transformers.cross_encoder import (CrossEncoder, CrossEncoderTrainer,
                                                     CrossEncoderTrainingArguments)
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import TrainerCallback

    torch.manual_seed(seed)
    rows = _read(data / "train.jsonl")
    rows = random.Random(seed).sample(rows, min(pairs, len(rows)))
    location, base_id = locate("all-MiniLM-L6-v2")
    model = CrossEncoder(location, num_labels=1, max_length=MAX_TOKENS)
    # the word embeddings (half of MiniLM's weights) stay the packaged ones: the judge ships only what it trained
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not _frozen(name)
    dataset = Dataset.from_dict({"question": [r["question"] for r in rows], "passage": [r["passage"] for r in rows],
                                 "label": [float(r["label"]) for r in rows]})
    deadline = time.monotonic() + minutes * 60

    class Deadline(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = control.should_training_stop or time.monotonic() > deadline

    args = CrossEncoderTrainingArguments(
        output_dir=str(out / "_checkpoints"), per_device_train_batch_size=batch, num_train_epochs=1,
        learning_rate=learning_rate, warmup_steps=max(1, len(rows) // batch // 10), seed=seed,
        logging_steps=max(1, min(25, len(rows) // batch // 20)), save_strategy="no", report_to="none",
        dataloader_drop_last=False, dataloader_pin_memory=False, disable_tqdm=False)
    started = time.monotonic()
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset,
                                  loss=BinaryCrossEntropyLoss(model), callbacks=[Deadline()])
    result = trainer.train()
    seconds = time.monotonic() - started
    out.mkdir(parents=True, exist_ok=True)
    trained = {name: p.detach().to(torch.float16).contiguous() for name, p in model[0].model.named_parameters()
               if not _frozen(name)}
    save_file(trained, str(out / WEIGHTS))
    shutil.rmtree(out / "_checkpoints", ignore_errors=True)
    manifest = {
        "about": "The judge: the bundled MiniLM fine-tuned as a cross-encoder scoring whether a passage answers "
                 "a question (sigmoid of one logit); its trained tensors in fp16, the word embeddings the base's. "
                 "Trained by scripts/train_judge.py on SQuAD (CC BY-SA 4.0).",
        "base": base_id, "max_tokens": MAX_TOKENS,
        "training": {"pairs": len(rows), "steps": result.global_step,
                     "pairs_seen": min(len(rows), result.global_step * batch), "seconds": round(seconds),
                     "learning_rate": learning_rate, "batch": batch, "seed": seed,
                     "loss": round(result.training_loss, 4), "threads": torch.get_num_threads()},
        "data": json.loads((data / "manifest.json").read_text(encoding="utf-8")),
        "files": {WEIGHTS: sha256_file(out / WEIGHTS)},
    }
    write_json_atomic(out / "manifest.json", manifest)  # the judge is loaded (and checked) from it just below
    valid = _read(data / "valid.jsonl")
    if valid:
        judge = load_judge(out)
        right = np.concatenate([judge.score(r["question"], [r["passage"]]) for r in valid]) >= 0.5
        right = right == np.array([r["label"] for r in valid], dtype=bool)
        kinds = np.array([r["kind"] for r in valid])
        manifest["valid"] = {"pairs": len(valid), "accuracy_at_0.5": round(float(right.mean()), 4),
                             "by_kind": {k: round(float(right[kinds == k].mean()), 4) for k in sorted(set(kinds))}}
        write_json_atomic(out / "manifest.json", manifest)
    print(json.dumps({k: manifest[k] for k in ("training", "valid") if k in manifest}), file=sys.stderr)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "build" / "judge_data")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "judge")
    parser.add_argument("--pairs", type=int, default=9600, help="seeded subsample of the training pairs")
    parser.add_argument("--minutes", type=float, default=110, help="stop training after this long")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    train(args.data, args.out, args.pairs, args.minutes, args.learning_rate, args.batch, args.seed)


if __name__ == "__main__":
    main()
