"""LoRA fine-tuning of a chat model on docbot's chat-format data, and the adapter manifest it writes.

This module is self-contained on purpose: it imports only the standard library, torch, transformers, peft, trl
and datasets, because `docbot.tuning.notebook` embeds its source verbatim in the Colab notebook. The notebook and local
training therefore run the same code.

Training data: JSONL files whose rows hold `messages` (user prompt with the context blocks and the question,
then the assistant answer). Each row becomes a TRL prompt/completion pair, so the loss is taken on the answer
only, and only the answer's positions go through the LM head (`answer_loss`); batches are grouped by length. On 2
CPU cores that trains 1.49x (SmolLM2) to 1.85x (Qwen2.5-0.5B) the tokens per second of a plain `Trainer` + PEFT
recipe (`benchmarks/train_speed.py`). Validation loss is computed every epoch, a checkpoint is saved every epoch
under `OUTPUT_DIR/checkpoints/` (an interrupted run resumes from the last one), and the result lands in
`OUTPUT_DIR/adapter/`: the LoRA adapter, the tokenizer and `docbot_adapter.json`, the manifest described by
`ADAPTER_MANIFEST` below.
"""

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["ADAPTER_MANIFEST", "MANIFEST_SCHEMA_VERSION", "model_fingerprint", "read_chat_jsonl", "train_lora"]

ADAPTER_MANIFEST = "docbot_adapter.json"
MANIFEST_SCHEMA_VERSION = 1

# The adapter manifest, `OUTPUT_DIR/adapter/docbot_adapter.json` (schema_version 1). Readers (the model registry,
# the providers) rely on these keys; add keys freely, but change or remove one only with a new schema_version.
#
# {
#   "schema_version": 1,
#   "base_model": {"name": str,            # what the user asked for: a packaged name, hub id or folder
#                  "location": str,        # where it was loaded from in this run (folder or hub id)
#                  "fingerprint": str|None},  # model_fingerprint() of the base weights
#   "dataset": {"card_sha256": str|None,   # sha256 of the bundle's dataset_card.json
#               "train_examples": int, "validation_examples": int,     # rows in the files
#               "train_examples_used": int, "validation_examples_used": int},  # rows that fit max_seq_length
#   "config": {"learning_rate", "batch_size", "num_epochs", "lora_rank", "lora_alpha", "lora_dropout",
#              "lora_target_modules": [str], "max_seq_length", "max_steps", "seed"},
#   "losses": {"train": [{"epoch": float, "step": int, "loss": float}],  # mean training loss since the last
#                                           # point, logged at each epoch end (and where max_steps cut an epoch)
#              "validation": [{"epoch": float, "step": int, "loss": float}],  # validation loss at the same points
#              "final_train": float|None,   # the last train point
#              "final_validation": float|None},  # the last point, or the best one with early stopping
#   "training": {"global_step": int, "resumed_from_step": int|None, "epochs": float, "device": str,
#                "precision": str, "seconds": float, "stopped_early": bool,
#                "train_seconds": float,  # in the training loop of this run (a resumed run: since the resume)
#                "tokens": int},          # prompt and answer tokens trained on in this run, padding excluded
#   "created_at": "YYYY-MM-DDTHH:MM:SSZ",
#   "library_versions": {"torch", "transformers", "peft", "trl"}
# }

_RUN_FILE = "docbot_run.json"  # beside the checkpoints: what they were trained on, so a resume cannot mix runs


def model_fingerprint(folder):
    """SHA-256 identifying a model's weights: of its one `*.safetensors` file, or, for a sharded model, of the
    lines `name<TAB>sha256` of every shard sorted by name."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors file in {folder}; cannot fingerprint the model")
    if len(files) == 1:
        return _sha256_file(files[0])
    listing = "".join(f"{f.name}\t{_sha256_file(f)}\n" for f in files)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def read_chat_jsonl(path):
    """Prompt/completion pairs from a chat JSONL file; a bad line is an error naming file:line and the reason."""
    pairs = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start + 1} of the line); "
                                 "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
            messages = row.get("messages") if isinstance(row, dict) else None
            if not isinstance(messages, list) or len(messages) < 2:
                raise ValueError(f"{where}: needs a 'messages' list with a prompt and an answer")
            for i, msg in enumerate(messages):
                if not (isinstance(msg, dict) and isinstance(msg.get("role"), str)
                        and isinstance(msg.get("content"), str)):
                    raise ValueError(f"{where}: message {i} needs string 'role' and 'content'")
            if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
                raise ValueError(f"{where}: the last message must be a non-empty assistant answer")
            pairs.append({
                "prompt": [{"role": m["role"], "content": m["content"]} for m in messages[:-1]],
                "completion": [{"role": "assistant", "content": messages[-1]["content"]}],
            })
    if not pairs:
        raise ValueError(f"{path}: no examples")
    return pairs


def train_lora(train_file, validation_file, base_model, output_dir, *, base_model_name, base_fingerprint,
               card_sha256, learning_rate, batch_size, num_epochs, lora_rank, lora_alpha, lora_dropout,
               lora_target_modules, max_seq_length, max_steps=-1, seed=0, resume=True,
               early_stopping_patience=None):
    """Train a LoRA adapter on `base_model` (folder or hub id) and return the manifest it writes.

    Writes checkpoints to `output_dir/checkpoints/` (one per epoch; with `resume`, a run whose checkpoints match
    this data, base model and hyper-parameters continues from the last one; `resume=False` starts over) and the
    adapter, tokenizer and manifest to `output_dir/adapter/`. `max_steps > 0` caps the optimizer steps (an epoch
    cut short still gets its validation loss and checkpoint). `early_stopping_patience`: stop after that many
    epochs without a lower validation loss, keeping the best epoch's adapter. It trains in bf16 where the hardware
    computes it natively (most GPUs; CPUs with AVX512-BF16 or AMX), fp16 on older GPUs, else fp32.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, EarlyStoppingCallback
    from trl import SFTConfig, SFTTrainer

    started = time.time()
    output_dir = Path(output_dir)
    checkpoints = output_dir / "checkpoints"
    train_pairs = read_chat_jsonl(train_file)
    validation_pairs = read_chat_jsonl(validation_file) if validation_file is not None else []
    if base_fingerprint is None and Path(base_model).is_dir():
        base_fingerprint = model_fingerprint(base_model)

    config = {
        "learning_rate": float(learning_rate), "batch_size": int(batch_size), "num_epochs": int(num_epochs),
        "lora_rank": int(lora_rank), "lora_alpha": int(lora_alpha), "lora_dropout": float(lora_dropout),
        "lora_target_modules": list(lora_target_modules), "max_seq_length": int(max_seq_length),
        "max_steps": int(max_steps), "seed": int(seed),
    }
    # What a checkpoint must share with this run to be resumed (epochs and max_steps may change between runs).
    run_identity = {
        "base_fingerprint": base_fingerprint, "base_location": str(base_model),
        "train_sha256": _sha256_file(train_file),
        "validation_sha256": _sha256_file(validation_file) if validation_pairs else None,
        **{k: v for k, v in config.items() if k not in ("num_epochs", "max_steps")},
    }
    last_checkpoint = _prepare_checkpoints(checkpoints, run_identity, resume)

    cuda = torch.cuda.is_available()
    # bf16 where the hardware computes it natively: GPUs that support it, and CPUs with AVX512-BF16 or AMX (on 2
    # such cores a SmolLM2 step of 4 examples took 28 s in bf16 against 41 s in fp32, at the same losses)
    bf16 = torch.cuda.is_bf16_supported() if cuda else _cpu_has_bf16(torch)
    fp16 = cuda and not bf16
    precision = "bf16" if bf16 else "fp16 mixed" if fp16 else "fp32"

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16 if bf16 else torch.float32)

    early = early_stopping_patience is not None
    if early and not validation_pairs:
        raise ValueError("early stopping needs validation examples; pass a validation file")
    args = SFTConfig(
        output_dir=str(checkpoints),
        learning_rate=config["learning_rate"],
        per_device_train_batch_size=config["batch_size"],
        per_device_eval_batch_size=config["batch_size"],
        num_train_epochs=config["num_epochs"],
        max_steps=config["max_steps"],
        max_length=config["max_seq_length"],
        # batches of similar lengths pad less: 8% of a random batch's tokens are padding on the sample data
        train_sampling_strategy="group_by_length",
        seed=config["seed"],
        eval_strategy="epoch" if validation_pairs else "no",
        save_strategy="epoch",
        logging_strategy="epoch",
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss" if early else None,
        greater_is_better=False if early else None,
        use_cpu=not cuda,
        bf16=bf16,  # TRL's default is bf16=True even on CPUs without native bf16, where it is slow: always set it
        fp16=fp16,
        **_no_activation_checkpointing(SFTConfig),
        report_to=[],
        disable_tqdm=False,
        dataloader_pin_memory=cuda,
    )
    trainer = _answer_loss_trainer(SFTTrainer)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_pairs),
        eval_dataset=Dataset.from_list(validation_pairs) if validation_pairs else None,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=config["lora_rank"], lora_alpha=config["lora_alpha"],
                               lora_dropout=config["lora_dropout"],
                               target_modules=config["lora_target_modules"], task_type="CAUSAL_LM"),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=early_stopping_patience)] if early else None,
    )
    train_used = len(trainer.train_dataset)
    validation_used = len(trainer.eval_dataset) if validation_pairs else 0
    if train_used == 0 or (validation_pairs and validation_used == 0):
        raise ValueError(f"no {'training' if train_used == 0 else 'validation'} example leaves room for an answer "
                         f"within max_seq_length={max_seq_length} tokens; raise max_seq_length")

    for name, used, total in (("training", train_used, len(train_pairs)),
                              ("validation", validation_used, len(validation_pairs))):
        if used < total:
            print(f"{total - used} of {total} {name} examples dropped: their prompt fills max_seq_length="
                  f"{max_seq_length} tokens (longer answers are cut at the limit)")
    _write_json_atomic(checkpoints / _RUN_FILE, run_identity)
    resumed_from = None
    if last_checkpoint is not None:
        resumed_from = int(json.loads((last_checkpoint / "trainer_state.json").read_text())["global_step"])
        print(f"Resuming from {last_checkpoint} (step {resumed_from})")
    result = trainer.train(resume_from_checkpoint=str(last_checkpoint) if last_checkpoint else None)

    history = trainer.state.log_history  # restored from the checkpoint on resume, so it covers the whole run
    train_losses = _loss_points(history, "loss")
    eval_losses = _loss_points(history, "eval_loss")
    if early and trainer.state.best_metric is not None:
        final_validation = round(float(trainer.state.best_metric), 6)  # the best epoch's adapter is the one kept
    else:
        final_validation = eval_losses[-1]["loss"] if eval_losses else None

    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "base_model": {"name": base_model_name, "location": str(base_model), "fingerprint": base_fingerprint},
        "dataset": {"card_sha256": card_sha256, "train_examples": len(train_pairs),
                    "validation_examples": len(validation_pairs), "train_examples_used": train_used,
                    "validation_examples_used": validation_used},
        "config": config,
        "losses": {"train": train_losses, "validation": eval_losses,
                   "final_train": train_losses[-1]["loss"] if train_losses else None,
                   "final_validation": final_validation},
        "training": {"global_step": int(trainer.state.global_step), "resumed_from_step": resumed_from,
                     "epochs": round(float(trainer.state.epoch or 0), 4),
                     "device": torch.cuda.get_device_name(0) if cuda else "cpu", "precision": precision,
                     "seconds": round(time.time() - started, 1),
                     "train_seconds": round(float(result.metrics["train_runtime"]), 1),
                     "tokens": int(getattr(trainer, "tokens_trained", 0)),
                     "stopped_early": bool(early and trainer.state.global_step < trainer.state.max_steps)},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "library_versions": _library_versions(),
    }
    _save_adapter(trainer, tokenizer, output_dir / "adapter", manifest)
    return manifest


def answer_loss(model, batch, num_items_in_batch=None):
    """Summed NLL of the answer tokens over `num_items_in_batch` (default: their count in `batch`).

    Only the positions whose next token is scored go through the LM head (`logits_to_keep`), the positions of
    every row's answer together; the prompt's positions, most of the sequence, never are. A 49k-152k-word head on
    every position is a fifth to a quarter of a small model's work, and its full logits the largest tensor of the
    step. TRL's own fused head scores every position off CUDA.

    A right-padded batch goes without its attention mask: in a causal model real tokens never see the pads after
    them, and the pads' outputs are never scored, so the loss is the same, and attention takes its unmasked
    causal path (SmolLM2 steps ~15% faster on CPU, measured in isolation).
    """
    import torch

    target = batch["labels"][:, 1:]
    scored = target != -100
    keep = scored.any(0).nonzero().flatten()
    mask = batch.get("attention_mask")
    right_padded = mask is not None and bool((mask[:, 1:] <= mask[:, :-1]).all())
    inputs = {k: v for k, v in batch.items()
              if k in ("input_ids", "position_ids") or (k == "attention_mask" and not right_padded)}
    logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
    total = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), target[:, keep].flatten(),
                                              ignore_index=-100, reduction="sum")
    count = scored.sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(count).clamp(min=1)


def _answer_loss_trainer(base):
    """`base` (TRL's SFTTrainer) with `answer_loss` as its loss, and the tokens trained on counted for the manifest."""

    class AnswerLossTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                mask = inputs.get("attention_mask")
                self.tokens_trained = getattr(self, "tokens_trained", 0) + int(
                    inputs["input_ids"].numel() if mask is None else mask.sum())
            loss = answer_loss(model, inputs, num_items_in_batch)
            return (loss, None) if return_outputs else loss

    return AnswerLossTrainer


def _cpu_has_bf16(torch):
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def _loss_points(history, key):
    """`{"epoch", "step", "loss"}` per logged epoch end, oldest first. An epoch cut short by `max_steps` and then
    resumed appears twice (at its cut and at its end): each point is a real measurement at that step."""
    return [{"epoch": round(float(h.get("epoch", 0)), 4), "step": int(h.get("step", 0)),
             "loss": round(float(h[key]), 6)} for h in history if key in h]


def _no_activation_checkpointing(config_class):
    """TRL turns activation (gradient) checkpointing on by default; these small models do not need the memory.
    transformers 5.x renamed the argument to `activation_checkpointing` and warns on the old name."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    return {"activation_checkpointing": False} if "activation_checkpointing" in names else \
        {"gradient_checkpointing": False}


def _prepare_checkpoints(checkpoints, run_identity, resume):
    """The checkpoint to resume from, or None; stale or unwanted checkpoints (our own files) are cleared."""
    from transformers.trainer_utils import get_last_checkpoint

    if not checkpoints.is_dir():
        return None
    last = get_last_checkpoint(str(checkpoints))
    if resume and last is not None:
        try:
            recorded = json.loads((checkpoints / _RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        if recorded == run_identity:
            return Path(last)
        print(f"Checkpoints in {checkpoints} come from a different run (data, base model or settings differ); "
              "starting over")
    shutil.rmtree(checkpoints)
    return None


def _save_adapter(trainer, tokenizer, target, manifest):
    """Adapter + tokenizer + manifest into a staging folder, then swapped in for `target` in one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        trainer.model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        _write_json_atomic(staging / ADAPTER_MANIFEST, manifest)
        staging.chmod(0o755)
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _library_versions():
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", "transformers", "peft", "trl"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json_atomic(path, obj):
    """JSON via a temp file in the same folder, fsync'd, then `os.replace`d over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
