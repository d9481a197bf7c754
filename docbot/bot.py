"""`ConfigurableDocBot`: the one object a user needs: load a domain, ask, switch domains and models."""

from __future__ import annotations

import json
import re
import shutil
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from ._io import sha256_file
from .answers import Answer, StreamingAnswer
from .base_models import PACKAGED_MODELS, base_fingerprint, resolve_base_model
from .config import Config, load_config
from .datasets import FORMATS, prepare_dataset
from .embeddings import Embedder
from .errors import DocbotError
from .index import DomainIndex, SyncReport, normalize_domain, rebuild_domain
from .prompts import NOT_COVERED, build_messages
from .providers import OllamaProvider, Provider, TransformersProvider, ollama_serves
from .providers.transformers_local import load_model
from .registry import (ModelVersion, find_version, import_zip, list_versions, probe_logits, probe_matches,
                       read_adapter_manifest, register)
from .retrieval import Retriever, Source
from .store import Store, open_store

__all__ = ["ConfigurableDocBot"]

MAX_QUESTION_CHARS = 4000  # about 1,000 tokens: more would push the context blocks out of a small model's window
_FOLLOW_UP_WORDS = 6  # a question this short, asked after another, is searched together with the one before


class ConfigurableDocBot:
    """Answers questions from one domain of documents at a time, citing the file and page of each source.

    Everything heavy (embedding model, index, language model) is loaded on first use and then kept.
    Keyword arguments override any field of `docbot.config.Config` (see `fine_tuning_config.py`).
    """

    def __init__(self, domain: str | None = None, documents_path: str | Path | None = None, *,
                 provider: str | None = None, model: str | None = None, config: Config | None = None,
                 use_fine_tuned: bool = False, fine_tuned_model_path: str | Path | None = None,
                 **overrides: object) -> None:
        if provider is not None:
            overrides["provider"] = provider
        self.config = (config or load_config()).replace(**overrides)
        self._model_choice = model
        self._provider: Provider | None = None
        self._embedder: Embedder | None = None
        self._store: Store | None = None
        self._retriever: Retriever | None = None
        self.domain: str | None = None
        self.documents_path: Path | None = None
        self.history: deque[tuple[str, str]] = deque(maxlen=self.config.history_turns)
        self.last_answer: Answer | StreamingAnswer | None = None
        self.fine_tuned: ModelVersion | None = None
        if domain is not None:
            self.load_domain(domain, documents_path)
        if use_fine_tuned or fine_tuned_model_path is not None:
            self.switch_to_fine_tuned_model(fine_tuned_model_path)

    # -- domains ---------------------------------------------------------------------------------------------

    def load_domain(self, name: str, path: str | Path | None = None, progress: bool = True) -> SyncReport:
        """Index the domain's folder (only new and changed files are embedded) and make it the current one.

        Without the folder on this machine, a domain already in the store (e.g. a team's shared server) opens as
        it stands; so does one that another process is writing, after `lock_timeout` (see `report.not_updated`).
        """
        domain = normalize_domain(name)
        folder = Path(path) if path is not None else self._default_folder(name)
        index = DomainIndex(self._get_store(), domain, self._get_embedder(), self.config.lock_timeout)
        if not folder.exists() and index.count():
            report = index.as_is(f"no folder {folder} here to sync from; answering from the index as it stands")
        else:
            report = index.sync(folder, self.config.chunk_size, self.config.chunk_overlap, progress=progress)
        if self.domain != domain:
            self.history.clear()
        self.domain, self.documents_path = domain, folder
        self._retriever = Retriever(index, self.config.hybrid_search)
        return report

    switch_domain = load_domain

    def reindex(self, name: str | None = None, path: str | Path | None = None, progress: bool = True) -> SyncReport:
        """Re-embed every file of a domain (the current one by default), e.g. after changing the embedding model,
        and make it the current one. The new index replaces the old one only once complete, so questions are
        answered from the old one meanwhile."""
        if name is None or normalize_domain(name) == self.domain:
            domain, folder = self._require_domain(), Path(path) if path is not None else self.documents_path
        else:
            domain = normalize_domain(name)
            folder = Path(path) if path is not None else self._default_folder(name)
        report = rebuild_domain(self._get_store(), domain, self._get_embedder(), folder, self.config.chunk_size,
                                self.config.chunk_overlap, self.config.lock_timeout, progress)
        self.load_domain(domain, folder, progress=False)
        return report

    def domains(self) -> list[str]:
        """Domains with a folder under the documents folder or an index in the store."""
        root = Path(self.config.documents_dir)
        found = {p.name.lower() for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} \
            if root.is_dir() else set()
        found |= set(DomainIndex.list_domains(self._get_store().client))
        return sorted(found)

    # -- answering --------------------------------------------------------------------------------------------

    def retrieve(self, question: str, k: int | None = None) -> list[Source]:
        """The chunks that would be given to the model, best first, each with its cosine similarity."""
        return self._require_retriever().search(question, k or self.config.top_k)

    def ask(self, question: str, k: int | None = None, stream: bool = False) -> Answer | StreamingAnswer:
        """Answer from the current domain. With `stream=True` iterate the result for text as it is written."""
        question = _check_question(question)
        retriever = self._require_retriever()
        query = question
        if self.history and len(question.split()) <= _FOLLOW_UP_WORDS:
            query = f"{self.history[-1][0]} {question}"
        relevant = [s for s in retriever.search(query, k or self.config.top_k)
                    if s.score >= self.config.relevance_threshold]
        if not relevant:
            text = NOT_COVERED.format(domain=self.domain)
            answer: Answer | StreamingAnswer = (StreamingAnswer(iter([text]), [], "", covered=False) if stream
                                                else Answer(text, [], "", covered=False))
        else:
            provider = self.provider
            messages = build_messages(question, relevant, list(self.history))
            pieces = _until_repeat(provider.stream(messages, self.config.max_new_tokens))
            answer = StreamingAnswer(pieces, relevant, str(provider),
                                     on_done=lambda text: self.history.append((question, text.strip())))
            if not stream:
                answer = Answer(str(answer).strip(), relevant, str(provider))
        self.last_answer = answer
        return answer

    def reset(self) -> None:
        """Forget earlier turns: the next question is read on its own."""
        self.history.clear()

    # -- fine-tuning data --------------------------------------------------------------------------------------

    def prepare_fine_tuning_data(self, qa_pairs: list[dict] | None = None, formats: tuple[str, ...] = FORMATS,
                                 max_examples: int | None = None, generator: str = "auto", progress: bool = True,
                                 **notebook_overrides: object) -> dict[str, str]:
        """Training data from the current domain (plus your QA pairs) and the Colab notebook that trains on it.

        `generator="auto"` asks the model for pairs when it is an Ollama model and derives them from the text
        itself for the embedded 135M model (too small to write reliable JSON); "llm" or "rules" forces one.
        Returns the written files by role; nothing earlier is overwritten.
        """
        from .notebook import base_model_source, build_notebook, write_notebook

        domain = self._require_domain()
        if generator == "auto":
            generator = "llm" if self.provider.name == "ollama" else "rules"
        retriever = self._require_retriever()
        paths = prepare_dataset(
            retriever.index.all_chunks(), domain=domain, config=self.config, generator=generator,
            provider=self.provider if generator == "llm" else None,
            retrieve=lambda q: retriever.search(q, self.config.top_k), qa_pairs=qa_pairs, formats=formats,
            max_examples=max_examples, progress=progress)
        bundle = Path(paths["bundle"])
        base_model = base_model_source(self.config.base_model, self.config.models_dir)
        notebook = build_notebook(self.config, bundle_name=bundle.name, base_model=base_model,
                                  overrides=notebook_overrides)
        kept = bundle.with_name(bundle.name.replace("bundle_", "fine_tuning_colab_").replace(".zip", ".ipynb"))
        write_notebook(notebook, kept)
        latest = Path(self.config.data_dir).parent / "fine_tuning_colab.ipynb"
        write_notebook(notebook, latest)
        return {**paths, "notebook": str(kept), "colab_notebook": str(latest)}

    # -- models -----------------------------------------------------------------------------------------------

    @property
    def provider(self) -> Provider:
        """The language model in use, loaded on first access."""
        if self._provider is None:
            self._provider = self._make_provider(self.config.provider, self._model_choice)
        return self._provider

    def set_model(self, provider: str | None = None, model: str | None = None) -> Provider:
        """Switch the provider and/or model; on failure the current one stays in use."""
        config = self.config.replace(provider=provider) if provider else self.config
        new = self._make_provider(config.provider, model)
        self.config, self._model_choice, self._provider, self.fine_tuned = config, model, new, None
        return new

    # -- fine-tuned models -------------------------------------------------------------------------------------

    def fine_tuned_versions(self, all_domains: bool = False) -> list[ModelVersion]:
        """Registered fine-tuned versions (of the current domain unless `all_domains`), newest first."""
        return list_versions(self.config.models_dir, None if all_domains else self.domain)

    def switch_to_fine_tuned_model(self, path: str | Path | None = None) -> Provider:
        """Answer with a fine-tuned model: a registry version (folder or name), an adapter folder (such as the
        notebook's unpacked `rag_chatbot_fine_tuned/`) or its zip, both imported into the registry first, or a
        merged model folder. With no path: the current domain's newest version. The adapter's base model is
        checked against the local one before loading, and its probe logits after."""
        target = self._resolve_fine_tuned(path)
        if isinstance(target, Path):  # a merged, standalone model folder
            return self.set_model("transformers", str(target))
        adapter = target.manifest["adapter"]["base_model"]
        location = self._checked_base(adapter, target.name)
        if self.provider.name == "ollama":
            return self._fine_tuned_on_ollama(target, location)
        provider = TransformersProvider(location, label=f"{adapter['name']}+{target.name}", adapter=str(target.path))
        measured = probe_logits(provider.tokenizer, TransformersProvider(location).lm, provider.lm)
        if not probe_matches(target.manifest["probe"], measured):
            raise DocbotError(f"{target.name} did not load as trained: its probe logits differ from the recorded "
                              f"ones (a mismatched base or an adapter that is ignored); nothing was switched")
        self.config, self._model_choice, self._provider = self.config.replace(provider="transformers"), None, provider
        self.fine_tuned = target
        return provider

    def train(self, max_steps: int = -1, resume: bool = True, early_stopping_patience: int | None = None,
              **overrides: object) -> ModelVersion:
        """Train a LoRA adapter on the current domain's newest prepared dataset (chat format), with the config's
        parameters and per-call overrides, and register it as the next version. The run checkpoints every epoch
        under `models/.runs/`, so training the same data again after an interruption resumes."""
        from . import training

        domain = self._require_domain()
        config = self.config.replace(**overrides)
        card = self._latest_card(domain)
        files = json.loads(card.read_text(encoding="utf-8"))["files"]
        chat = {split: card.parent / name for name in files for split in ("train", "validation")
                if name.startswith("chat_data_") and name.endswith(f"_{split}.jsonl")}
        if len(chat) != 2:
            raise DocbotError(f"{card.name} has no chat-format files; run prepare_fine_tuning_data() "
                              f"(`fine-tune`) with the chat format")
        location = resolve_base_model(config.base_model, config.models_dir)
        run_dir = Path(config.models_dir) / ".runs" / card.stem.removeprefix("dataset_card_")
        training.train_lora(
            chat["train"], chat["validation"], location, run_dir, base_model_name=config.base_model,
            base_fingerprint=base_fingerprint(location) if Path(location).is_dir() else None,
            card_sha256=sha256_file(card), learning_rate=config.learning_rate, batch_size=config.batch_size,
            num_epochs=config.num_epochs, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout, lora_target_modules=config.lora_target_modules,
            max_seq_length=config.max_seq_length, max_steps=max_steps, resume=resume,
            early_stopping_patience=early_stopping_patience)
        version = register(run_dir / "adapter", config.models_dir, domain, probe=self._prober(),
                           source=f"trained on {card.name}")
        shutil.rmtree(run_dir, ignore_errors=True)  # registered and verified: the checkpoints are done with
        return version

    def _latest_card(self, domain: str) -> Path:
        cards = sorted(Path(self.config.data_dir).glob(f"dataset_card_{domain}_*.json"),
                       key=lambda p: p.stat().st_mtime_ns)
        if not cards:
            raise DocbotError(f"no prepared data for domain '{domain}' in {self.config.data_dir}; run "
                              f"prepare_fine_tuning_data() (in the chatbot: fine-tune) first")
        return cards[-1]

    def _fine_tuned_on_ollama(self, version: ModelVersion, location: str) -> Provider:
        """Serve a version from the Ollama server: merged, exported to GGUF with a matching chat template and
        created there on first use (kept under models/exports/, reused afterwards)."""
        from transformers import AutoTokenizer

        from .export import export_gguf, merge_adapter, ollama_create, ollama_template

        server = self.provider
        name = f"docbot-{version.name}"
        if not server.has_model(name):
            folder = Path(self.config.models_dir) / "exports" / version.name
            if not (folder / "merged").is_dir():
                merge_adapter(location, str(version.path), str(folder / "merged"))
            if not (folder / "model.gguf").is_file():
                export_gguf(str(folder / "merged"), str(folder / "model.gguf"))
            template, stops = ollama_template(AutoTokenizer.from_pretrained(folder / "merged"))
            ollama_create(server.client, name, str(folder / "model.gguf"), template, stops)
        self._provider, self.fine_tuned = OllamaProvider(name, host=server.host), version
        return self._provider

    def use_base(self) -> Provider:
        """Back to the base model chosen in the config."""
        self.fine_tuned = None
        self._provider = None
        return self.provider

    def _resolve_fine_tuned(self, path: str | Path | None) -> ModelVersion | Path:
        models_dir = self.config.models_dir
        if path is None:
            versions = self.fine_tuned_versions()
            if not versions:
                raise DocbotError(f"no fine-tuned versions of domain '{self.domain}' in {models_dir}; train one "
                                  f"(`train`) or pass the path of an adapter, a merged model or the notebook's zip")
            return versions[0]
        name = str(path)
        found = find_version(models_dir, name)
        if found is None and self.domain and re.fullmatch(r"v?\d+\.\d+\.\d+", name):  # "v1.2.0" or "1.2.0"
            found = find_version(models_dir, f"{self.domain}_finetuned_v{name.lstrip('v')}")
        if found is not None:
            return found
        path = Path(path)
        if path.is_file() and path.suffix == ".zip":
            return import_zip(path, models_dir, self._import_domain(), probe=self._prober())
        if (path / "adapter_config.json").is_file():
            return register(path, models_dir, self._import_domain(), probe=self._prober(), source=f"folder {path}")
        if (path / "config.json").is_file():
            return path
        raise DocbotError(f"{path}: not a fine-tuned model; pass a registry version (see `models`), an adapter "
                          f"folder, the notebook's rag_chatbot_fine_tuned.zip, or a merged model folder")

    def _import_domain(self) -> str:
        if self.domain is None:
            raise DocbotError("load a domain first: imported adapters are registered under the current domain")
        return self.domain

    def _checked_base(self, recorded: dict, what: str) -> str:
        """The local base model the adapter was trained on; refuses another one before anything is loaded."""
        if not recorded.get("name"):
            raise DocbotError(f"{what} does not say which base model it was trained on")
        location = resolve_base_model(recorded["name"], self.config.models_dir)
        if recorded.get("fingerprint") and Path(location).is_dir():
            local = base_fingerprint(location)
            if local != recorded["fingerprint"]:
                raise DocbotError(f"{what} was trained on {recorded['name']} with weights {recorded['fingerprint'][:12]}, "
                                  f"but the local {recorded['name']} ({location}) has weights {local[:12]}; "
                                  f"use the same base model (or retrain on this one)")
        return location

    def _prober(self):
        """The probe `register` records: the adapter loaded on the local base it was trained on."""
        def probe(adapter_dir: Path) -> dict:
            manifest = read_adapter_manifest(adapter_dir)
            location = self._checked_base(manifest["base_model"], str(adapter_dir))
            tokenizer, adapted = load_model(location, str(adapter_dir))
            return probe_logits(tokenizer, TransformersProvider(location).lm, adapted)
        return probe

    def _make_provider(self, kind: str, model: str | None) -> Provider:
        if kind == "auto":
            if model is not None and (Path(model).is_dir() or model in PACKAGED_MODELS):
                kind = "transformers"
            else:
                kind = "ollama" if ollama_serves(model or self.config.ollama_model) else "transformers"
        if kind == "ollama":
            return OllamaProvider(model or self.config.ollama_model)
        name = model or self.config.base_model
        return TransformersProvider(resolve_base_model(name, self.config.models_dir), label=name)

    # -- evaluation -----------------------------------------------------------------------------------------------

    def evaluate(self, questions: str | Path | None = None, **options: object):
        """Did fine-tuning help? Runs {base, fine-tuned} x {no retrieval, retrieval} on held-out paraphrases of
        the training questions and on questions about the validation documents (or on a JSONL file of
        question/answer pairs), writes `evaluations/<stamp>/report.json` and `chart.png`, and returns the report
        (`print(report.table())`). Options: see `docbot.evaluation.evaluate`."""
        from .evaluation import evaluate

        return evaluate(self, questions, **options)

    # -- internals --------------------------------------------------------------------------------------------

    def _get_embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.config.embedding_model)
        return self._embedder

    def _get_store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.config.index_dir, self.config.chroma_host, self.config.chroma_port)
        return self._store

    def _default_folder(self, name: str) -> Path:
        """`<documents_dir>/<Name>`, matching the folder's case as it is on disk."""
        root = Path(self.config.documents_dir)
        if root.is_dir():
            for candidate in root.iterdir():
                if candidate.is_dir() and candidate.name.lower() == name.lower():
                    return candidate
        return root / name

    def _require_domain(self) -> str:
        if self.domain is None:
            raise DocbotError("no domain loaded; call bot.load_domain(name, path) (in the chatbot: switch NAME)")
        return self.domain

    def _require_retriever(self) -> Retriever:
        self._require_domain()
        assert self._retriever is not None
        return self._retriever


def _until_repeat(pieces: Iterator[str]) -> Iterator[str]:
    """End a small model's degenerate loop: generation stops once a finished line repeats an earlier one."""
    seen: set[str] = set()
    line = ""
    try:
        for piece in pieces:
            yield piece
            *finished, line = (line + piece).split("\n")
            for text in filter(None, (f.strip() for f in finished)):
                if text in seen:
                    return
                seen.add(text)
    finally:
        getattr(pieces, "close", lambda: None)()


def _check_question(question: str) -> str:
    question = re.sub(r"\s+", " ", question or "").strip()
    if not question:
        raise DocbotError("the question is empty; type a question about the documents")
    if len(question) > MAX_QUESTION_CHARS:
        raise DocbotError(f"the question is {len(question):,} characters long; ask in at most "
                          f"{MAX_QUESTION_CHARS:,} characters")
    return question

