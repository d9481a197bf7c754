"""One validated configuration object; its defaults are the constants in `fine_tuning_config.py`."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, fields

import fine_tuning_config as _defaults

from .errors import ConfigError

__all__ = ["Config", "load_config"]


@dataclass(frozen=True)
class Config:
    """Every tunable parameter; see `fine_tuning_config.py` for why each default is what it is."""

    learning_rate: float = _defaults.LEARNING_RATE
    batch_size: int = _defaults.BATCH_SIZE
    num_epochs: int = _defaults.NUM_EPOCHS
    base_model: str = _defaults.BASE_MODEL
    lora_rank: int = _defaults.LORA_RANK
    lora_alpha: int = _defaults.LORA_ALPHA
    lora_dropout: float = _defaults.LORA_DROPOUT
    lora_target_modules: tuple[str, ...] = tuple(_defaults.LORA_TARGET_MODULES)
    max_seq_length: int = _defaults.MAX_SEQ_LENGTH
    chunk_size: int = _defaults.CHUNK_SIZE
    chunk_overlap: int = _defaults.CHUNK_OVERLAP
    max_training_examples: int = _defaults.MAX_TRAINING_EXAMPLES
    top_k: int = _defaults.TOP_K
    relevance_threshold: float = _defaults.RELEVANCE_THRESHOLD
    hybrid_search: bool = _defaults.HYBRID_SEARCH
    embedding_model: str = _defaults.EMBEDDING_MODEL
    provider: str = _defaults.PROVIDER
    ollama_model: str = _defaults.OLLAMA_MODEL
    max_new_tokens: int = _defaults.MAX_NEW_TOKENS
    history_turns: int = _defaults.HISTORY_TURNS
    documents_dir: str = _defaults.DOCUMENTS_DIR
    index_dir: str = _defaults.INDEX_DIR
    models_dir: str = _defaults.MODELS_DIR
    data_dir: str = _defaults.DATA_DIR
    chroma_host: str = _defaults.CHROMA_HOST
    chroma_port: int = _defaults.CHROMA_PORT
    lock_timeout: float = _defaults.LOCK_TIMEOUT

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            if hints[f.name] == tuple[str, ...]:
                if isinstance(value, list):
                    value = tuple(value)
                    object.__setattr__(self, f.name, value)
                ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
            elif hints[f.name] is float:  # NaN and infinity slip past every range check, so they are refused here
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            elif hints[f.name] is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, hints[f.name])
            if not ok:
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
        if self.history_turns < 0:
            raise ConfigError(f"config history_turns must be >= 0, got {self.history_turns!r}")
        if self.provider not in ("auto", "transformers", "ollama"):
            raise ConfigError(f"config provider must be 'auto', 'transformers' or 'ollama', got {self.provider!r}")
        if not self.lora_target_modules:
            raise ConfigError("config lora_target_modules must name at least one module")

    def replace(self, **overrides: object) -> Config:
        """A copy with some fields changed; an unknown name is an error that lists the known ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown config name(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **overrides)


def load_config(**overrides: object) -> Config:
    """The defaults from `fine_tuning_config.py` with per-call overrides applied and validated."""
    return Config().replace(**overrides)


def _type_name(tp: object) -> str:
    if tp is float:
        return "a finite number"
    return "a tuple of strings" if tp == tuple[str, ...] else f"a {getattr(tp, '__name__', tp)}"
