"""The fine-tuned model's lifecycle: train, resolve, import, check, load (in process or on an Ollama server).

Before an adapter is loaded its recorded base model and weights fingerprint are checked against the local base;
after loading, its probe logits must match the recorded ones, so an adapter that is silently ignored is caught.

Registering also converts the adapter to a GGUF LoRA when its base ships as a GGUF (the packaged models), so that
`use-fine-tuned` answers at llama.cpp's speed over the quantized base instead of in fp32 transformers. Quantization
moves logits a little, so llama.cpp's greedy tokens are not transformers' exactly: the two are compared on the
probe prompt, token by token with transformers' tokens as the prefix (teacher forcing, so that one flip at a
near-tie does not derail the rest), and the agreement must reach `AGREEMENT_TOLERANCE`. Measured (probe, 1
thread): the base models alone agree 91% (SmolLM2, Q4_1: 29 of 32 tokens, each flip at a logit margin under 0.3)
and 100% (Qwen2.5-Coder-0.5B, Q4_K_M); trained adapters 90-100%; a trained adapter that llama.cpp ignored
43-72%; an rsLoRA adapter (llama.cpp scales it as plain LoRA) 0%.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shutil
import time
from pathlib import Path

from ..config import Config
from ..errors import DocbotError
from ..files import read_json, sha256_file
from ..providers import (PACKAGED_MODELS, LlamaCppProvider, OllamaProvider, Provider, TransformersProvider,
                         resolve_base_model, resolve_gguf)
from ..providers.base_models import MANIFEST_NAME
from ..providers.transformers_local import load_model
from . import training
from .export import export_lora_gguf
from .registry import (ModelVersion, base_fingerprint, base_fingerprints, find_version, import_zip, list_versions,
                       probe_greedy, probe_logits, probe_matches, read_adapter_manifest, register)

__all__ = ["resolve", "load", "base_provider", "train", "latest_card", "read_card", "chat_files",
           "llamacpp_agreement", "AGREEMENT_TOLERANCE", "LORA_GGUF"]

log = logging.getLogger("docbot")

# The share of the probe's next tokens llama.cpp+LoRA must pick as transformers+adapter does. Quantization alone
# flipped up to 4 of 32 (SmolLM2 Q4_1, each at a logit margin under 0.3); an ignored trained adapter kept 43-72%.
AGREEMENT_TOLERANCE = 0.8
LORA_GGUF = "adapter_lora.gguf"  # beside adapter_model.safetensors in a version's folder
LORA_OUTTYPE = "f32"  # the trained weights exactly; a few MB at most, and f16 agreed no better


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
        return import_zip(path, models_dir, _import_domain(domain), probe=_prober(models_dir),
                          serve=_server(config))
    if (path / "adapter_config.json").is_file():
        return register(path, models_dir, _import_domain(domain), probe=_prober(models_dir), source=f"folder {path}",
                        serve=_server(config))
    if (path / "config.json").is_file():
        return path
    raise DocbotError(f"{path}: not a fine-tuned model; pass a registry version (see `models`), an adapter "
                      f"folder, the notebook's rag_chatbot_fine_tuned.zip, or a merged model folder")


def load(version: ModelVersion, config: Config, current: Provider | None = None) -> Provider:
    """The provider that answers with `version`: llama.cpp with its GGUF LoRA over the base's GGUF when it has one
    (unless the config asks for transformers), else transformers (probe-checked), or, when `current` is an Ollama
    server, that server with the version created on it."""
    adapter = version.manifest["adapter"]["base_model"]
    location = checked_base(adapter, version.name, config.models_dir)
    if isinstance(current, OllamaProvider):
        return _on_ollama(version, location, current, config.models_dir)
    lora = _lora_file(version, config)
    if lora is not None:
        return _on_llamacpp(version, lora, config)
    provider = TransformersProvider(location, label=f"{adapter['name']}+{version.name}", adapter=str(version.path))
    measured = probe_logits(provider.tokenizer, TransformersProvider(location).lm, provider.lm)
    if not probe_matches(version.manifest["probe"], measured):
        raise DocbotError(f"{version.name} did not load as trained: its probe logits differ from the recorded "
                          f"ones (a mismatched base or an adapter that is ignored); nothing was switched")
    return provider


def base_provider(version: ModelVersion, config: Config) -> Provider:
    """The base model `version` was trained on, in process on the runtime `load` serves the version with (the
    evaluation's base arms: base and fine-tuned are compared on one runtime, not quantized against fp32)."""
    base = version.manifest["adapter"]["base_model"]
    location = checked_base(base, version.name, config.models_dir)
    if _lora_file(version, config) is not None:
        return LlamaCppProvider(str(resolve_gguf(base["name"], config.models_dir)), label=base["name"],
                                n_threads=config.n_threads or None)
    return TransformersProvider(location, label=base["name"])


def checked_base(recorded: dict, what: str, models_dir: str) -> str:
    """The local base model the adapter was trained on; refuses another one before anything is loaded."""
    if not recorded.get("name"):
        raise DocbotError(f"{what} does not say which base model it was trained on")
    location = resolve_base_model(recorded["name"], models_dir)
    if recorded.get("fingerprint") and Path(location).is_dir():
        local = base_fingerprints(location)
        if recorded["fingerprint"] not in local:
            raise DocbotError(f"{what} was trained on {recorded['name']} with weights {recorded['fingerprint'][:12]}, "
                              f"but the local {recorded['name']} ({location}) has weights {local[0][:12]}; "
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
    try:
        version = register(run_dir / "adapter", config.models_dir, domain, probe=_prober(config.models_dir),
                           source=f"trained on {card.name}", serve=_server(config))
    except DocbotError as exc:
        raise DocbotError(f"{exc} (The trained adapter stays in {run_dir / 'adapter'}.)") from exc
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
    """The probe `register` records: the adapter loaded on the local base it was trained on (its logits against
    the base's, and its greedy tokens, the reference for the llama.cpp form)."""
    def probe(adapter_dir: Path) -> dict:
        manifest = read_adapter_manifest(adapter_dir)
        location = checked_base(manifest["base_model"], str(adapter_dir), models_dir)
        tokenizer, adapted = load_model(location, str(adapter_dir))
        return {**probe_logits(tokenizer, TransformersProvider(location).lm, adapted),
                "greedy": probe_greedy(tokenizer, adapted)}
    return probe


def llamacpp_agreement(provider: LlamaCppProvider, reference: dict, free_running: bool = True) -> dict:
    """How closely llama.cpp follows `reference` (`probe_greedy`'s prompt ids and greedy tokens).

    `teacher_forced`: the share of positions where llama.cpp, given the reference's tokens so far, picks the
    reference's next token (the criterion: one number per position). `leading`: how many tokens llama.cpp's own
    greedy continuation shares with the reference from the start; a single near-tie ends it (SmolLM2's base: 9 of
    32), so it is recorded for the reader, not judged. Each forced step reuses the cached prefix: ~20 ms a token.
    """
    prompt, tokens = list(reference["prompt_ids"]), list(reference["tokens"])
    forced = [provider.greedy_tokens(prompt + tokens[:i], 1)[:1] == [token] for i, token in enumerate(tokens)]
    result = {"tokens": len(tokens), "teacher_forced": round(sum(forced) / max(len(tokens), 1), 4),
              "tolerance": AGREEMENT_TOLERANCE}
    if free_running:
        own = provider.greedy_tokens(prompt, len(tokens))
        result["leading"] = next((i for i, (a, b) in enumerate(zip(own, tokens)) if a != b), min(len(own), len(tokens)))
    return result


def _lora_file(version: ModelVersion, config: Config) -> Path | None:
    """The version's GGUF LoRA when llama.cpp should serve it: it has one, and the config does not ask for
    transformers (an Ollama config without a server, as in the evaluation, keeps transformers as before)."""
    served = version.manifest.get("gguf_lora") or {}
    if not served.get("file") or config.provider not in ("auto", "llamacpp"):
        return None
    return version.path / served["file"]


def _on_llamacpp(version: ModelVersion, lora: Path, config: Config) -> Provider:
    """llama.cpp with the version's GGUF LoRA over the base's GGUF; the file must be the registered one, and it
    must still follow the adapter's probe tokens (a changed base GGUF or llama.cpp build is caught here)."""
    served, base = version.manifest["gguf_lora"], version.manifest["adapter"]["base_model"]["name"]
    if not lora.is_file() or sha256_file(lora) != served["sha256"]:
        raise DocbotError(f"{lora} is missing or not the file registered with {version.name} (SHA-256 differs); "
                          f"restore the version folder from a backup, or answer with it through transformers "
                          f"(provider 'transformers'); nothing was switched")
    provider = LlamaCppProvider(str(resolve_gguf(base, config.models_dir)), label=f"{base}+{version.name}",
                                n_threads=config.n_threads or None, lora=str(lora))
    agreement = llamacpp_agreement(provider, version.manifest["probe"]["greedy"], free_running=False)
    if agreement["teacher_forced"] < AGREEMENT_TOLERANCE:
        raise DocbotError(f"{version.name} did not load as registered on llama.cpp: it picks "
                          f"{agreement['teacher_forced']:.0%} of the probe's tokens as the adapter does (registered: "
                          f"{served['agreement']['teacher_forced']:.0%}, tolerance {AGREEMENT_TOLERANCE:.0%}); the "
                          f"base GGUF or xllamacpp changed? Reinstall them, or use provider 'transformers'; "
                          f"nothing was switched")
    return provider


def _server(config: Config):
    """The `serve` step `register` runs: the adapter as a GGUF LoRA for llama.cpp, checked against the adapter's
    probe tokens. Skipped (recorded with the reason) when the base has no GGUF or xllamacpp is missing. Below the
    tolerance the adapter is refused, unless the config asks for transformers: then only the llama.cpp form is."""
    def serve(adapter_dir: Path, probe: dict) -> dict:
        base = read_adapter_manifest(adapter_dir)["base_model"]
        if base.get("name") not in PACKAGED_MODELS:
            return {"file": None, "reason": f"{base.get('name')} has no packaged GGUF, so transformers serves it"}
        if importlib.util.find_spec("xllamacpp") is None:
            return {"file": None, "reason": "xllamacpp is not installed (`pip install xllamacpp==2026.10.11549`)"}
        location = checked_base(base, str(adapter_dir), config.models_dir)
        target = adapter_dir / LORA_GGUF
        target.unlink(missing_ok=True)  # a copy from another version's folder: made again for this one
        started = time.perf_counter()
        export_lora_gguf(adapter_dir, location, target, outtype=LORA_OUTTYPE)
        seconds = time.perf_counter() - started
        provider = LlamaCppProvider(str(resolve_gguf(base["name"], config.models_dir)), label=base["name"],
                                    n_threads=config.n_threads or None, lora=str(target))
        agreement = llamacpp_agreement(provider, probe["greedy"])
        del provider  # frees llama.cpp's model before the version is renamed into place
        if agreement["teacher_forced"] >= AGREEMENT_TOLERANCE:
            base_manifest = read_json(Path(location) / MANIFEST_NAME, "remove the folder: it is converted again")
            return {"file": LORA_GGUF, "sha256": sha256_file(target), "outtype": LORA_OUTTYPE,
                    "base_gguf_sha256": base_manifest.get("gguf_sha256"),
                    "converter": "llama.cpp convert_lora_to_gguf.py", "convert_seconds": round(seconds, 1),
                    "agreement": agreement}
        target.unlink()
        problem = (f"on llama.cpp the adapter picks {agreement['teacher_forced']:.0%} of the probe's "
                   f"{agreement['tokens']} next tokens as it does on transformers, below the "
                   f"{AGREEMENT_TOLERANCE:.0%} that quantization allows{_unsupported(adapter_dir)}")
        if config.provider == "transformers":
            log.warning("%s: registered for transformers only", problem)
            return {"file": None, "reason": problem, "agreement": agreement}
        raise DocbotError(f"{problem}: llama.cpp would answer differently from the model you trained, so it was "
                          f"not registered. Register it for transformers alone (provider 'transformers'; in the "
                          f"chatbot `model transformers`, then `use-fine-tuned PATH`), or retrain it as a plain "
                          f"LoRA on {base['name']}")
    return serve


def _unsupported(adapter_dir: Path) -> str:
    """The adapter settings llama.cpp's converter does not carry over, as a clause for the refusal."""
    config = read_json(adapter_dir / "adapter_config.json", "copy the adapter folder again")
    found = [key for key in ("use_rslora", "use_dora") if config.get(key)]
    return f" (its adapter_config.json sets {' and '.join(found)}, which llama.cpp does not apply)" if found else ""
