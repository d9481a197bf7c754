"""`ConfigurableDocBot`: the one object a user needs: load a domain, ask, switch domains and models, fine-tune.

A thin facade over the two pipelines: `rag/` (documents to answers) and `tuning/` (answers to a better model),
with `providers/` running the models. It holds the session's state (the domain, the model in use, the
conversation) and nothing else.
"""

from __future__ import annotations

from pathlib import Path

from .config import Config, load_config
from .errors import DocbotError
from .providers import Provider, open_provider
from .rag.answers import Answer, StreamingAnswer, answer_question
from .rag.conversation import Conversation
from .rag.embeddings import Embedder
from .rag.index import DomainIndex, SyncReport, normalize_domain, rebuild_domain
from .rag.policy import AnswerPolicy
from .rag.retrieval import Retriever, Source
from .rag.store import Store, open_store
from .tuning import finetuned
from .tuning.datasets import FORMATS
from .tuning.registry import ModelVersion, list_versions

__all__ = ["ConfigurableDocBot"]


class ConfigurableDocBot:
    """Answers questions from one domain of documents at a time, citing the file and page of each source.

    Everything heavy (embedding model, index, language model) is loaded on first use and then kept.
    Keyword arguments override any field of `docbot.config.Config` (see `fine_tuning_config.py`).
    """

    def __init__(self, domain: str | None = None, documents_path: str | Path | None = None, *,
                 provider: str | None = None, model: str | None = None, config: Config | None = None,
                 use_fine_tuned: bool = False, fine_tuned_model_path: str | Path | None = None,
                 **overrides: object) -> None:
        self.config = (config or load_config()).replace(**overrides, **({"provider": provider} if provider else {}))
        self._model_choice = model
        self._provider: Provider | None = None
        self._embedder: Embedder | None = None
        self._store: Store | None = None
        self._retriever: Retriever | None = None
        self.domain: str | None = None
        self.documents_path: Path | None = None
        self.conversation = Conversation(self.config.history_turns)
        self.last_answer: Answer | StreamingAnswer | None = None
        self.fine_tuned: ModelVersion | None = None
        self.policy = AnswerPolicy()  # the answer path's rules (benchmarks switch them off to weigh each)
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
        index = DomainIndex(self._get_store(), domain, self.embedder, self.config.lock_timeout)
        if not folder.exists() and index.count():
            report = index.as_is(f"no folder {folder} here to sync from; answering from the index as it stands")
        else:
            report = index.sync(folder, self.config.chunk_size, self.config.chunk_overlap, progress=progress)
        if self.domain != domain:
            self.conversation.clear()
        self.domain, self.documents_path = domain, folder
        self._retriever = Retriever(index, self.config.hybrid_search, self._get_store().keyword_cache)
        if self.config.hybrid_search and (report.added or report.changed or report.removed):
            self._retriever.keywords.prepare()  # 110,873 chunks: 30 s here, rather than at the first question
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
        report = rebuild_domain(self._get_store(), domain, self.embedder, folder, self.config.chunk_size,
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

    def retrieve(self, question: str, k: int | None = None, hybrid: bool | None = None) -> list[Source]:
        """The chunks that would be given to the model, best first, each with its cosine similarity.
        `hybrid=False` searches vectors alone for this call."""
        return self._require_retriever().search(question, k or self.config.top_k, hybrid)

    def ask(self, question: str, k: int | None = None, stream: bool = False, *, retrieval: bool = True,
            hybrid: bool | None = None, model: Provider | None = None,
            conversation: Conversation | None = None) -> Answer | StreamingAnswer:
        """Answer from the current domain. With `stream=True` iterate the result for text as it is written.

        Per call: `retrieval=False` lets the model answer from its weights alone, `hybrid` overrides the search
        mode, `model` answers with another provider (a base or a fine-tuned model), and `conversation` keeps the
        turns of another chat than `bot.conversation`.
        """
        retriever = self._require_retriever()
        answer = answer_question(
            question, search=(lambda q: retriever.search(q, k or self.config.top_k, hybrid)) if retrieval else None,
            unknown_terms=retriever.unknown_terms, model=lambda: self.provider if model is None else model,
            conversation=self.conversation if conversation is None else conversation, stream=stream,
            relevance_threshold=self.config.relevance_threshold, max_new_tokens=self.config.max_new_tokens,
            domain=self.domain, embed=self.embedder.embed_remembered, context_chars=self.config.context_chars,
            judge=self.config.judge, judge_threshold=self.config.judge_threshold, policy=self.policy)
        self.last_answer = answer
        return answer

    def reset(self) -> None:
        """Forget earlier turns: the next question is read on its own."""
        self.conversation.clear()

    # -- fine-tuning ------------------------------------------------------------------------------------------

    def prepare_fine_tuning_data(self, qa_pairs: list[dict] | None = None, formats: tuple[str, ...] = FORMATS,
                                 max_examples: int | None = None, generator: str = "auto", progress: bool = True,
                                 held_out: list[str] | None = None, **notebook_overrides: object) -> dict[str, str]:
        """Training data from the current domain (plus your QA pairs) and the Colab notebook that trains on it.

        `generator`: "auto", "llm" or "rules" (see `docbot.tuning.notebook.prepare_data_and_notebook`).
        `held_out`: the documents kept for validation, as cited ("policies/visiting.md"); by default a random 20%.
        Returns the written files by role; nothing earlier is overwritten.
        """
        from .tuning.notebook import prepare_data_and_notebook

        domain, retriever = self._require_domain(), self._require_retriever()
        return prepare_data_and_notebook(
            retriever.index.all_chunks(), domain=domain, config=self.config, provider=self.provider,
            retrieve=lambda q: retriever.search(q, self.config.top_k), generator=generator,
            notebook_overrides=notebook_overrides, qa_pairs=qa_pairs, formats=formats, max_examples=max_examples,
            embed=self.embedder.embed_remembered, held_out=held_out, progress=progress)

    def train(self, max_steps: int = -1, resume: bool = True, early_stopping_patience: int | None = None,
              **overrides: object) -> ModelVersion:
        """Train a LoRA adapter on the current domain's newest prepared dataset (chat format), with the config's
        parameters and per-call overrides, and register it as the next version. The run checkpoints every epoch
        under `models/.runs/`, so training the same data again after an interruption resumes."""
        return finetuned.train(self.config.replace(**overrides), self._require_domain(), max_steps, resume,
                               early_stopping_patience)

    def evaluate(self, questions: str | Path | None = None, **options: object):
        """Did fine-tuning help? {base, fine-tuned} x {no retrieval, retrieval} on held-out questions (or a JSONL
        file of question/answer pairs), through the chat's own answer path; writes `evaluations/<stamp>/` and
        returns the report (`print(report.table())`). Options: see `docbot.tuning.evaluation.evaluate`."""
        from .tuning.evaluation import evaluate

        return evaluate(self, questions, domain=self._require_domain(), config=self.config, in_use=self.fine_tuned,
                        **options)

    # -- models -----------------------------------------------------------------------------------------------

    @property
    def provider(self) -> Provider:
        """The language model in use, loaded on first access."""
        if self._provider is None:
            self._provider = self._open(self.config, self._model_choice)
        return self._provider

    def set_model(self, provider: str | None = None, model: str | None = None) -> Provider:
        """Switch the provider and/or model; on failure the current one stays in use."""
        config = self.config.replace(provider=provider) if provider else self.config
        new = self._open(config, model)
        self.config, self._model_choice, self._provider, self.fine_tuned = config, model, new, None
        return new

    def fine_tuned_versions(self, all_domains: bool = False) -> list[ModelVersion]:
        """Registered fine-tuned versions (of the current domain unless `all_domains`), newest first."""
        return list_versions(self.config.models_dir, None if all_domains else self.domain)

    def switch_to_fine_tuned_model(self, path: str | Path | None = None) -> Provider:
        """Answer with a fine-tuned model: a registry version (folder or name), an adapter folder (such as the
        notebook's unpacked `rag_chatbot_fine_tuned/`) or its zip, both imported into the registry first, or a
        merged model folder. With no path: the current domain's newest version. The adapter's base model is
        checked against the local one before loading, and its probe after. A version with a GGUF LoRA answers
        on llama.cpp over the base's GGUF unless the provider is transformers (`finetuned.load`)."""
        target = finetuned.resolve(path, self.config, self.domain)
        if isinstance(target, Path):  # a merged, standalone model folder
            return self.set_model("transformers", str(target))
        new = finetuned.load(target, self.config, self.provider)
        if new.name != self.config.provider:
            self.config = self.config.replace(provider=new.name)
        self._model_choice, self._provider, self.fine_tuned = None, new, target
        return new

    def use_base(self) -> Provider:
        """Back to the base model chosen in the config."""
        self.fine_tuned = self._provider = None
        return self.provider

    # -- internals --------------------------------------------------------------------------------------------

    def _open(self, config: Config, model: str | None) -> Provider:
        return open_provider(config.provider, model, answer_model=config.answer_model,
                             ollama_model=config.ollama_model, models_dir=config.models_dir,
                             n_threads=config.n_threads, lora=config.answer_lora)

    @property
    def embedder(self) -> Embedder:
        """The embedding model, loaded on first use."""
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
        if self._retriever is None:
            self._require_domain()
            raise DocbotError(f"domain '{self.domain}' has no index open; load it again (switch {self.domain})")
        return self._retriever
