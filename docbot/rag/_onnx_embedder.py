"""The "onnx-int8" embedding backend: a sentence-transformers model run by ONNX Runtime with int8 weights.

For CPUs without native bfloat16, where torch computes in float32. The model (transformer, mean pooling, L2
normalization) is exported to ONNX once and its MatMul weights quantized to int8, per output channel (per-tensor
int8 of every op type moved vectors to cosine 0.68 of float32; per-channel MatMul-only keeps mean 0.993, min 0.978
on 600 chunks of 1,000 characters). The file is kept in the user cache, keyed by the model id and its weights'
SHA-256, so later runs, and other processes, load it in a fraction of a second.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import UnsupportedModelError
from ..files import cache_dir, folder_lock, fsync_dir, sha256_file

__all__ = ["OnnxModel", "onnx_file", "supported"]

log = logging.getLogger("docbot")
_RECIPE = "v1"  # part of the cache key: a change to the export or quantization below must change it
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


class OnnxModel:
    """One quantized ONNX model and its tokenizer; `encode` gives unit-length float32 vectors."""

    def __init__(self, location: str, model_id: str) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(location)
        max_length = supported(folder, model_id)
        self.path = onnx_file(folder, model_id)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.no_padding()  # each batch is padded to its own longest text
        options = ort.SessionOptions()
        options.intra_op_num_threads = len(os.sched_getaffinity(0))  # the cores this process may use
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.dimension = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Texts sorted by length and embedded `batch_size` at a time (less padding), returned in input order."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in rows])
            ids = np.zeros((len(rows), max(len(e.ids) for e in encodings)), dtype=np.int64)
            mask = np.zeros_like(ids)
            for r, e in enumerate(encodings):
                ids[r, :len(e.ids)], mask[r, :len(e.ids)] = e.ids, 1
            out[rows] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out


def supported(folder: Path, model_id: str) -> int:
    """The model's max_seq_length, if the folder is a sentence-transformers model this backend reproduces:
    a transformer with tokenizer.json, mean pooling, optionally normalization. Anything else is refused."""
    def refuse(why: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"embedding model {model_id} cannot run on the onnx-int8 backend ({why}); "
                                     f"set embedding_backend = \"torch\"")
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = next((m for m in modules if m["type"].endswith(".Pooling")), None)
        pool = json.loads((folder / pooling["path"] / "config.json").read_text(encoding="utf-8")) if pooling else {}
        bert = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        raise refuse("not a local sentence-transformers folder") from None
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise refuse(f"its modules are {' + '.join(kinds)}, not Transformer + Pooling (+ Normalize)")
    modes = sorted(k for k, v in pool.items() if k.startswith("pooling_mode") and v)
    if modes != ["pooling_mode_mean_tokens"]:
        raise refuse(f"pooling {', '.join(modes) or 'none'}, not mean")
    if not (folder / "tokenizer.json").is_file() or _weights(folder) is None:
        raise refuse("no tokenizer.json or weights file")
    return int(bert.get("max_seq_length") or 512)


def onnx_file(folder: Path, model_id: str) -> Path:
    """The quantized model in the user cache, exported on first use; written atomically, under a lock, so two
    processes starting together export it once and no reader sees half a file."""
    weights = _weights(folder)
    stat = weights.stat()
    digest = _digest(str(weights), stat.st_size, stat.st_mtime_ns)
    target = (cache_dir() / "onnx" / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', model_id)}-{digest[:16]}-{_RECIPE}"
              / "model-int8.onnx")
    if target.is_file():
        return target
    with folder_lock(target.parent):
        if not target.is_file():
            _export(folder, target)
    return target


def _export(folder: Path, target: Path) -> None:
    """Export the model with mean pooling and normalization, quantize it (about 5 s), move it into place."""
    log.info("embedding model %s: exporting to ONNX int8 once, into %s", folder, target.parent)
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    model = Pooled(AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval())
    example = torch.ones(2, 16, dtype=torch.long)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export.") as work:
        plain, quantized = Path(work) / "model.onnx", Path(work) / "model-int8.onnx"
        with warnings.catch_warnings():  # tracer warnings about the model's Python branches, all constant here
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example, example), str(plain), dynamo=False, opset_version=17,
                              input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                            "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}})
        logging.disable(logging.WARNING)  # "consider pre-processing", on the root logger: not needed for MatMul
        try:
            quantize_dynamic(str(plain), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])
        finally:
            logging.disable(logging.NOTSET)
        with open(quantized, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(quantized, target)
    fsync_dir(target.parent)


def _weights(folder: Path) -> Path | None:
    return next((folder / name for name in _WEIGHTS if (folder / name).is_file()), None)


@lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of the weights (0.2-0.4 s for MiniLM's 90 MB), once per process while the file is unchanged."""
    return sha256_file(Path(path))
