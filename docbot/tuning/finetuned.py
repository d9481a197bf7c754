"""The fine-tuned model's lifecycle: train, resolve, import, check, load (in process or on an Ollama server).

Before an adapter is loaded its recorded base model and weights fingerprint are checked against the local base;
after loading, its probe logits must match the recorded ones, so an adapter that is silently ignored is caught.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from ..config import Config
from ..errors import DocbotError
from ..files import read_json, sha256_file
from ..providers import OllamaProvider, Provider, TransformersProvider, resolve_base_model
from ..providers.transformers_local import load_model
from . import training
from .registry import (ModelVersion, base_fingerprint, find_version, import_zip, list_versions, probe_logits,
                       probe_matches, read_adapter_manifest, register)

__all__ = ["resolve", "load", "base_provider", "train", "latest_card", "read_card", "chat_files"]

log = logging.getLogger("docbot")


def resolve(spec: str | Path | None, config: Config, domain: str | None) -> ModelVersion | Path:
    """A registry version (by folder, name, or "v1.2.0" of `domain`; None: the domain's newest), an adapter folder
    or the notebook's zip (both imported under `domain` first), or a merged model folder (returned as a Path)."""
    models_dir = config.models_dir
    if spec is None:
        versions = list_versions(models_dir, domain)
        if not versions:
            raise DocbotError(f"no fine-tuned versions of domain '{domain}' in {models_dir}; train one "
                              f"(`train`) or pass the path of an adapter, a merged model or the notebook's zip")
        return versions[0]
    name = str(spec)
    found = find_version(models_dir, name)
    if found is None and domain and re.fullmatch(r"v?\d+\.\d+\.\d+", name):  # "v1.2.0" or "1.2.0"
        found = find_version(models_dir, f"{domain}_finetuned_v{name.lstrip('v')}")
    if found is not None:
        return found
    path = Path(spec)
    if path.is_file() and path.suffix == ".zip":
        return import_zip(path, models_dir, _import_domain(domain), probe=_prober(models_dir))
    if (path / "adapter_config.json").is_file():
        return register(path, models_dir, _import_domain(domain), probe=_prober(models_dir), source=f"folder {path}")
    if (path / "config.json").is_file():
        return path
    raise DocbotError(f"{path}: not a fine-tuned model; pass a registry version (see `models`), an adapter "
                      f"folder, the notebook's rag_chatbot_fine_tuned.zip, or a merged model folder")


def load(version: ModelVersion, config: Config, current: Provider | None = None) -> Provider:
    """The provider that answers with `version`: in process (probe-checked), or, when `current` is an Ollama
    server, that server with the version created on it."""
    adapter = version.manifest["adapter"]["base_model"]
    location = checked_base(adapter, version.name, config.models_dir)
    if isinstance(current, OllamaProvider):
        return _on_ollama(version, location, current, config.models_dir)
    provider = TransformersProvider(location, label=f"{adapter['name']}+{version.name}", adapter=str(version.path))
    measured = probe_logits(provider.tokenizer, TransformersProvider(location).lm, provider.lm)
    if not probe_matches(version.manifest["probe"], measured):
        raise DocbotError(f"{version.name} did not load as trained: its probe logits differ from the recorded "
                          f"ones (a mismatched base or an adapter that is ignored); nothing was switched")
    return provider


def base_provider(version: ModelVersion, config: Config) -> Provider:
    """The base model `version` was trained on, in process (the evaluation's base arms)."""
    base = version.manifest["adapter"]["base_model"]
    return TransformersProvider(checked_base(base, version.name, config.models_dir), label=base["name"])


def checked_base(recorded: dict, what: str, models_dir: str) -> str:
    """The local base model the adapter was trained on; refuses another one before anything is loaded."""
    if not recorded.get("name"):
        raise DocbotError(f"{what} does not say which base model it was trained on")
    location = resolve_base_model(recorded["name"], models_dir)
    if recorded.get("fingerprint") and Path(location).is_dir():
        local = base_fingerprint(location)
        if local != recorded["fingerprint"]:
            raise DocbotError(f"{what} was trained on {recorded['name']} with weights {recorded['fingerprint'][:12]}, "
                              f"but the local {recorded['name']} ({location}) has weights {local[:12]}; "
                              f"use the same base model (or retrain on this one)")
    return location


def train(config: Config, domain: str, max_steps: int = -1, resume: bool = True,
          early_stopping_patience: int | None = None) -> ModelVersion:
    """LoRA on the domain's newest dataset (chat format), registered as the next version. A dataset without
    validation examples (a one-document domain) trains without validation loss, and says so."""
    card = latest_card(config.data_dir, domain)
    chat = chat_files(card)
    validation = chat["validation"] if chat["validation"].stat().st_size else None
    if validation is None:
        log.warning("%s has no validation examples (the domain has one document, and the split is by document); "
                    "training without validation loss", card.name)
        if early_stopping_patience is not None:
            raise DocbotError("early stopping needs validation examples; add a second document to the domain, "
                              "prepare the data again (`fine-tune`), or train without early stopping")
    location = resolve_base_model(config.base_model, config.models_dir)
    run_dir = Path(config.models_dir) / ".runs" / card.stem.removeprefix("dataset_card_")
    try:
        training.train_lora(
            chat["train"], validation, location, run_dir, base_model_name=config.base_model,
            base_fingerprint=base_fingerprint(location) if Path(location).is_dir() else None,
            card_sha256=sha256_file(card), learning_rate=config.learning_rate, batch_size=config.batch_size,
            num_epochs=config.num_epochs, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout, lora_target_modules=config.lora_target_modules,
            max_seq_length=config.max_seq_length, max_steps=max_steps, resume=resume,
            early_stopping_patience=early_stopping_patience)
    except ValueError as exc:  # the trainer is self-contained (it runs in the notebook too): its data errors
        raise DocbotError(str(exc)) from exc
    version = register(run_dir / "adapter", config.models_dir, domain, probe=_prober(config.models_dir),
                       source=f"trained on {card.name}")
    shutil.rmtree(run_dir, ignore_errors=True)  # registered and verified: the checkpoints are done with
    return version


def latest_card(data_dir: str, domain: str) -> Path:
    """The domain's newest dataset card."""
    cards = sorted(Path(data_dir).glob(f"dataset_card_{domain}_*.json"), key=lambda p: p.stat().st_mtime_ns)
    if not cards:
        raise DocbotError(f"no prepared data for domain '{domain}' in {data_dir}; run "
                          f"prepare_fine_tuning_data() (in the chatbot: fine-tune) first")
    return cards[-1]


def read_card(card: Path) -> dict:
    """A dataset card's JSON; a damaged card is an error naming it."""
    data = read_json(card, "prepare the data again (`fine-tune`)")
    if not isinstance(data.get("files"), dict):
        raise DocbotError(f"{card}: not a dataset card (no 'files'); prepare the data again (`fine-tune`)")
    return data


def chat_files(card: Path) -> dict[str, Path]:
    """The card's chat-format train and validation files."""
    files = read_card(card)["files"]
    chat = {split: card.parent / name for name in files for split in ("train", "validation")
            if name.startswith("chat_data_") and name.endswith(f"_{split}.jsonl")}
    if len(chat) != 2:
        raise DocbotError(f"{card.name} has no chat-format files; run prepare_fine_tuning_data() "
                          f"(`fine-tune`) with the chat format")
    return chat


def _on_ollama(version: ModelVersion, location: str, server: OllamaProvider, models_dir: str) -> Provider:
    """Serve a version from the Ollama server: merged, exported to GGUF with a matching chat template and created
    there on first use (kept under models/exports/, reused afterwards)."""
    from transformers import AutoTokenizer

    from .export import export_gguf, merge_adapter
    from .ollama_export import ollama_create, ollama_template

    name = f"docbot-{version.name}"
    if not server.has_model(name):
        folder = Path(models_dir) / "exports" / version.name
        if not (folder / "merged").is_dir():
            merge_adapter(location, str(version.path), str(folder / "merged"))
        if not (folder / "model.gguf").is_file():
            export_gguf(str(folder / "merged"), str(folder / "model.gguf"))
        template, stops = ollama_template(AutoTokenizer.from_pretrained(folder / "merged"))
        ollama_create(server.host, name, str(folder / "model.gguf"), template, stops)
    return OllamaProvider(name, host=server.host)


def _import_domain(domain: str | None) -> str:
    if domain is None:
        raise DocbotError("load a domain first: imported adapters are registered under the current domain")
    return domain


def _prober(models_dir: str):
    """The probe `register` records: the adapter loaded on the local base it was trained on."""
    def probe(adapter_dir: Path) -> dict:
        manifest = read_adapter_manifest(adapter_dir)
        location = checked_base(manifest["base_model"], str(adapter_dir), models_dir)
        tokenizer, adapted = load_model(location, str(adapter_dir))
        return probe_logits(tokenizer, TransformersProvider(location).lm, adapted)
    return probe
