"""Versioned fine-tuned models in `models/`: `<domain>_finetuned_vMAJOR.MINOR.PATCH/`, never overwritten.

A version is a folder holding a LoRA adapter, its tokenizer, the adapter manifest written by training
(`docbot_adapter.json`: base model and fingerprint, dataset card hash, config, losses) and the registry's own
`docbot_model.json`: the version, where the adapter came from, the adapter's hash, and a probe, the logits of
the base and of the adapted model on a fixed prompt, and the adapted model's greedy tokens there. Loading checks the
probe, so an adapter that is silently ignored (the worst failure of a fine-tune) is caught. A version whose base
has a GGUF for llama.cpp also holds the adapter as a GGUF LoRA (`gguf_lora` in the manifest: the file, its hash and
how closely llama.cpp follows the adapter's greedy tokens), made by the `serve` step given to `register`, so that
both runtimes answer with it. Versions follow the guide: a new base model bumps MAJOR,
new data MINOR, a retrain on the same data PATCH. A version appears only once its files are complete and its probe
verified (staged in a hidden folder, then renamed).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..files import read_json, sha256_file, write_json_atomic
from ..errors import DocbotError
from ..providers.base_models import MANIFEST_NAME
from .training import ADAPTER_MANIFEST, model_fingerprint

__all__ = ["ModelVersion", "base_fingerprint", "read_adapter_manifest", "list_versions", "next_version", "register", "import_zip", "find_version",
           "REGISTRY_MANIFEST", "PROBE_MESSAGES", "PROBE_NEW_TOKENS", "probe_logits", "probe_greedy",
           "probe_matches"]

REGISTRY_MANIFEST = "docbot_model.json"
PROBE_MESSAGES = [{"role": "user", "content": "Answer from the text above: what does the document say?"}]
PROBE_TOKENS = 32  # logits kept per probe: the adapted model's top tokens, with the base's values for the same ids
PROBE_NEW_TOKENS = 32  # greedy tokens kept per probe: what another runtime's form of the adapter is compared with
_NAME = re.compile(r"^(?P<domain>[a-z0-9][a-z0-9_-]*)_finetuned_v(?P<v>\d+\.\d+\.\d+)$")


@dataclass(frozen=True)
class ModelVersion:
    """A registered fine-tuned model."""

    domain: str
    version: tuple[int, int, int]
    path: Path
    manifest: dict  # docbot_model.json, which embeds the adapter manifest under "adapter"

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> str:
        """One line for `models`: version, base, data, losses, date, and whether llama.cpp serves it."""
        adapter = self.manifest["adapter"]
        losses = adapter.get("losses", {})
        card = (adapter.get("dataset", {}).get("card_sha256") or "?")[:12]
        served = self.manifest.get("gguf_lora") or {}
        llamacpp = (f"  llama.cpp (agrees {served['agreement']['teacher_forced']:.0%})" if served.get("file")
                    else "")
        return (f"{self.name}  base {adapter['base_model']['name']}  data {card}  "
                f"loss train {_fmt(losses.get('final_train'))} / validation {_fmt(losses.get('final_validation'))}  "
                f"{self.manifest['registered_at']}{llamacpp}")


def base_fingerprint(folder: str | Path) -> str:
    """What an adapter records as its base: a packaged model's GGUF SHA-256 (its identity: the de-quantized bytes
    may differ between transformers versions, here and in Colab), else its weights' hash, computed now."""
    return base_fingerprints(folder)[0]


def base_fingerprints(folder: str | Path) -> tuple[str, ...]:
    """Every fingerprint naming this local base: a packaged model's GGUF SHA-256 and, as adapters recorded before
    that, its converted weights' hash (both from its conversion manifest); else its weights' hash."""
    manifest = Path(folder) / MANIFEST_NAME
    if manifest.is_file():
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
        return recorded["gguf_sha256"], recorded["fingerprint"]
    return (model_fingerprint(folder),)


def list_versions(models_dir: str | Path, domain: str | None = None) -> list[ModelVersion]:
    """Registered versions, newest first (by version number), of one domain or all."""
    found = []
    for folder in Path(models_dir).glob("*_finetuned_v*"):
        m = _NAME.match(folder.name)
        if m and (domain is None or m["domain"] == domain) and (folder / REGISTRY_MANIFEST).is_file():
            manifest = read_json(folder / REGISTRY_MANIFEST, f"restore it from a backup, or move {folder.name} "
                                                             f"out of {models_dir} to drop that version")
            found.append(ModelVersion(m["domain"], tuple(int(x) for x in m["v"].split(".")), folder, manifest))
    return sorted(found, key=lambda v: (v.domain, v.version), reverse=True)


def find_version(models_dir: str | Path, name: str) -> ModelVersion | None:
    """A version by folder name (`medical_finetuned_v1.0.0`) or path; None if it is not registered."""
    wanted = Path(name).name
    return next((v for v in list_versions(models_dir) if v.name == wanted), None)


def next_version(models_dir: str | Path, domain: str, adapter_manifest: dict) -> tuple[int, int, int]:
    """The guide's semantic versioning, against the domain's latest version."""
    versions = list_versions(models_dir, domain)
    if not versions:
        return (1, 0, 0)
    latest = versions[0]
    major, minor, patch = latest.version
    before = latest.manifest["adapter"]
    if before["base_model"].get("fingerprint") != adapter_manifest["base_model"].get("fingerprint") or \
            before["base_model"].get("name") != adapter_manifest["base_model"].get("name"):
        return (major + 1, 0, 0)
    if before.get("dataset", {}).get("card_sha256") != adapter_manifest.get("dataset", {}).get("card_sha256"):
        return (major, minor + 1, 0)
    return (major, minor, patch + 1)


def register(adapter_dir: str | Path, models_dir: str | Path, domain: str, *, probe, source: str,
             serve=None) -> ModelVersion:
    """Copy an adapter folder into the registry as the next version; `probe(adapter_dir)` must return
    `{"base": [...], "adapted": [...], "token_ids": [...]}` computed by loading it (and may add more, such as
    `probe_greedy`'s tokens). `serve(adapter_dir, probe_values)`, when given, writes other runtimes' forms of the
    adapter into the staged folder and returns what the manifest records of them as `gguf_lora` (or raises to
    refuse the adapter). The same adapter registered twice is the same version, not a new one."""
    adapter_dir, models_dir = Path(adapter_dir), Path(models_dir)
    adapter_manifest = read_adapter_manifest(adapter_dir)
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise DocbotError(f"{adapter_dir}: no adapter_model.safetensors; is this a PEFT LoRA adapter folder?")
    digest = sha256_file(weights)
    same = next((v for v in list_versions(models_dir, domain) if v.manifest.get("adapter_sha256") == digest
                 and v.manifest["adapter"]["base_model"] == adapter_manifest["base_model"]), None)
    if same is not None:
        return same
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{domain}_finetuned.", dir=models_dir))
    try:
        for item in adapter_dir.iterdir():
            if item.is_file():
                shutil.copy2(item, staging / item.name)
        probe_values = probe(staging)
        if probe_values["base"] == probe_values["adapted"]:
            raise DocbotError(f"{adapter_dir}: the adapter does not change the base model's output (its LoRA "
                              f"weights are zero?); train it for some steps first")
        served = serve(staging, probe_values) if serve is not None else None
        while True:
            version = next_version(models_dir, domain, adapter_manifest)
            target = models_dir / f"{domain}_finetuned_v{'.'.join(map(str, version))}"
            manifest = {"schema_version": 1, "domain": domain, "version": ".".join(map(str, version)),
                        "source": source, "adapter_sha256": digest,
                        "registered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "probe": {"messages": PROBE_MESSAGES, **probe_values}, "gguf_lora": served,
                        "adapter": adapter_manifest}
            write_json_atomic(staging / REGISTRY_MANIFEST, manifest)
            staging.chmod(0o755)
            try:
                staging.rename(target)  # atomic; fails if another process took this version meanwhile
            except OSError:
                if target.exists():
                    continue
                raise
            return ModelVersion(domain, version, target, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def import_zip(zip_path: str | Path, models_dir: str | Path, domain: str, *, probe, serve=None) -> ModelVersion:
    """Register the notebook's `rag_chatbot_fine_tuned.zip` (or any zip holding one adapter folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                for member in zf.namelist():  # refuse paths that would escape the folder
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise DocbotError(f"{zip_path}: unsafe path {member!r} in the zip")
                zf.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise DocbotError(f"{zip_path}: not a zip file ({exc})") from exc
        folders = {p.parent for p in Path(tmp).rglob("adapter_config.json")}
        if len(folders) != 1:
            raise DocbotError(f"{zip_path}: expected one adapter folder (with adapter_config.json), "
                              f"found {len(folders)}")
        return register(folders.pop(), models_dir, domain, probe=probe, source=f"zip {Path(zip_path).name}",
                        serve=serve)


def probe_logits(tokenizer, base_model, adapted_model) -> dict:
    """Last-position logits of both models on the probe prompt, at the adapted model's top tokens."""
    import torch

    text = tokenizer.apply_chat_template(PROBE_MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        adapted = adapted_model(**ids).logits[0, -1].float()
        base = base_model(**ids).logits[0, -1].float()
    top = torch.topk(adapted, min(PROBE_TOKENS, adapted.numel())).indices
    return {"token_ids": top.tolist(), "base": [round(float(x), 5) for x in base[top]],
            "adapted": [round(float(x), 5) for x in adapted[top]]}


def probe_greedy(tokenizer, adapted_model, new_tokens: int = PROBE_NEW_TOKENS) -> dict:
    """The probe prompt's token ids and the adapted model's greedy continuation (end-of-turn token included): the
    reference another runtime's form of the adapter is compared with, token by token, on the same ids."""
    import torch

    text = tokenizer.apply_chat_template(PROBE_MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = adapted_model.generate(**ids, max_new_tokens=new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    prompt = ids["input_ids"][0].tolist()
    return {"prompt_ids": prompt, "tokens": out[0, len(prompt):].tolist()}


def probe_matches(recorded: dict, measured: dict, tolerance: float = 1e-3) -> bool:
    """Whether freshly measured probe logits equal the recorded adapted ones (and differ from the base's)."""
    pairs = list(zip(recorded["adapted"], measured["adapted"]))
    return (recorded["token_ids"] == measured["token_ids"] and all(abs(a - b) <= tolerance for a, b in pairs)
            and measured["adapted"] != recorded["base"])


def read_adapter_manifest(adapter_dir: Path) -> dict:
    """The training manifest; a bare PEFT adapter (trained elsewhere) gets one from its adapter_config.json."""
    path = adapter_dir / ADAPTER_MANIFEST
    if path.is_file():
        return read_json(path, "train the adapter again, or restore the file")
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        raise DocbotError(f"{adapter_dir}: not an adapter folder (no adapter_config.json)")
    base = read_json(config, "the adapter folder is damaged: copy it again").get("base_model_name_or_path")
    return {"schema_version": 1, "base_model": {"name": base, "location": base, "fingerprint": None},
            "dataset": {}, "config": {}, "losses": {}}


def _fmt(value) -> str:
    return "?" if value is None else f"{value:.3f}"
