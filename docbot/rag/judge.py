"""The judge: a cross-encoder that reads a question with one block and scores whether the block answers it.

It is the bundled MiniLM fine-tuned on public reading-comprehension data (SQuAD 2.0's adversarial unanswerable
questions and SQuAD 1.1) by `scripts/train_judge.py`, which writes a folder with the tensors training changed, in
fp16, and a manifest whose sha256 sums are checked before they are read.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ModelNotFoundError
from ..files import read_json, sha256_file
from .embeddings import locate

__all__ = ["Judge", "load_judge", "MAX_TOKENS", "WEIGHTS"]

MAX_TOKENS = 256  # question and block together: a 1,000-character chunk is about 250 tokens
WEIGHTS = "judge.safetensors"  # the trained tensors (all but the word embeddings, which are the base's), fp16
_RESTORE = "train the judge again with scripts/train_judge.py, or copy its folder again"


class Judge:
    """`score(question, passages)`: for each passage, the probability that it answers the question."""

    def __init__(self, folder: Path) -> None:
        import torch
        from safetensors.torch import load_file
        from sentence_transformers.cross_encoder import CrossEncoder

        self.manifest = _checked_manifest(folder)
        location, base_id = locate("all-MiniLM-L6-v2")
        if base_id != self.manifest["base"]:
            raise ModelNotFoundError(f"{folder}: the judge was trained over {self.manifest['base']}, but the bundled "
                                     f"embedding model is {base_id}; reinstall docbot's requirements")
        self._model = CrossEncoder(location, num_labels=1, max_length=self.manifest["max_tokens"], device="cpu")
        trained = {name: tensor.float() for name, tensor in load_file(str(folder / WEIGHTS)).items()}
        foreign = self._model[0].model.load_state_dict(trained, strict=False).unexpected_keys
        if foreign:
            raise ModelNotFoundError(f"{folder / WEIGHTS}: tensors {foreign[:3]} are not MiniLM's; {_RESTORE}")
        self._model.eval()
        self._torch = torch
        self._lock = threading.Lock()  # one forward pass at a time: torch's CPU threads are shared

    def score(self, question: str, passages: list[str]) -> np.ndarray:
        """float array, one probability in [0, 1] per passage."""
        if not passages:
            return np.zeros(0, dtype=np.float32)
        with self._lock, self._torch.inference_mode():
            return np.asarray(self._model.predict([(question, p) for p in passages], batch_size=len(passages),
                                                  show_progress_bar=False), dtype=np.float32)


@lru_cache(maxsize=2)
def load_judge(folder: str | Path) -> Judge:
    """The judge in `folder`, loaded once per process; a missing or altered file is refused with what to do."""
    return Judge(Path(folder))


def _checked_manifest(folder: Path) -> dict:
    manifest = read_json(folder / "manifest.json", _RESTORE)
    for name, expected in manifest.get("files", {}).items():
        path = folder / name
        try:
            actual = sha256_file(path)
        except OSError as e:
            raise ModelNotFoundError(f"{path}: the judge's file is missing ({e.strerror}); {_RESTORE}") from e
        if actual != expected:
            raise ModelNotFoundError(f"{path}: sha256 {actual[:12]}... is not the manifest's {expected[:12]}...; "
                                     f"the file was altered or damaged; {_RESTORE}")
    return manifest
