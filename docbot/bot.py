"""`ConfigurableDocBot`: the one object a user needs: load a domain, ask, switch domains and models."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from .answers import Answer, StreamingAnswer
from .base_models import PACKAGED_MODELS, resolve_base_model
from .config import Config, load_config
from .datasets import FORMATS, prepare_dataset
from .embeddings import Embedder
from .errors import DocbotError
from .index import DomainIndex, SyncReport, drop_domain, normalize_domain, open_store
from .prompts import NOT_COVERED, build_messages
from .providers import OllamaProvider, Provider, TransformersProvider, ollama_serves
from .retrieval import Retriever, Source

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
                 **overrides: object) -> None:
        if provider is not None:
            overrides["provider"] = provider
        self.config = (config or load_config()).replace(**overrides)
        self._model_choice = model
        self._provider: Provider | None = None
        self._embedder: Embedder | None = None
        self._store = None
        self._retriever: Retriever | None = None
        self.domain: str | None = None
        self.documents_path: Path | None = None
        self.history: deque[tuple[str, str]] = deque(maxlen=self.config.history_turns)
        self.last_answer: Answer | StreamingAnswer | None = None
        if domain is not None:
            self.load_domain(domain, documents_path)

    # -- domains ---------------------------------------------------------------------------------------------

    def load_domain(self, name: str, path: str | Path | None = None, progress: bool = True) -> SyncReport:
        """Index the domain's folder (only new and changed files are embedded) and make it the current one."""
        domain = normalize_domain(name)
        folder = Path(path) if path is not None else self._default_folder(name)
        index = DomainIndex(self._get_store(), domain, self._get_embedder())
        report = index.sync(folder, self.config.chunk_size, self.config.chunk_overlap, progress=progress)
        if self.domain != domain:
            self.history.clear()
        self.domain, self.documents_path = domain, folder
        self._retriever = Retriever(index, self.config.hybrid_search)
        return report

    switch_domain = load_domain

    def reindex(self, progress: bool = True) -> SyncReport:
        """Rebuild the current domain's index from scratch (e.g. after changing the embedding model)."""
        domain, folder = self._require_domain(), self.documents_path
        self._retriever = None
        drop_domain(self._get_store(), domain)
        return self.load_domain(domain, folder, progress=progress)

    def domains(self) -> list[str]:
        """Domains with a folder under the documents folder or an index in the store."""
        root = Path(self.config.documents_dir)
        found = {p.name.lower() for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} \
            if root.is_dir() else set()
        found |= set(DomainIndex.list_domains(self._get_store()))
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
        self.config, self._model_choice, self._provider = config, model, new
        return new

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

    # -- internals --------------------------------------------------------------------------------------------

    def _get_embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.config.embedding_model)
        return self._embedder

    def _get_store(self):
        if self._store is None:
            self._store = open_store(self.config.index_dir)
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

