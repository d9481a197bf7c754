"""The in-process provider: any causal LM folder (or hub id) run with transformers on CPU or GPU."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import lru_cache

from ..errors import ModelNotFoundError, ProviderError
from .base import Messages, Provider

__all__ = ["TransformersProvider", "load_model"]


class TransformersProvider(Provider):
    """Loads a model and its tokenizer once; answers with greedy decoding, streamed from a worker thread."""

    name = "transformers"

    def __init__(self, location: str, label: str | None = None, adapter: str | None = None) -> None:
        self.model = label or location
        self.location = location
        self.adapter = adapter
        self.tokenizer, self.lm = _load(location, adapter)

    def prompt_ids(self, messages: Messages):
        """Token ids of the chat-templated prompt, ending where the assistant's answer begins."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, return_tensors="pt", add_special_tokens=False)

    def stream(self, messages: Messages, max_new_tokens: int) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return stop.is_set()

        inputs = self.prompt_ids(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.lm.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer,
                                     stopping_criteria=StoppingCriteriaList([_Stop()]),
                                     pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
            except BaseException as exc:  # surfaced in the caller's thread below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="docbot-generate", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            stop.set()
            worker.join()
        if failure:
            raise ProviderError(f"generation failed with {self.model}: {failure[0]}") from failure[0]


@lru_cache(maxsize=3)
def _load(location: str, adapter: str | None = None):
    """Tokenizer and model (with a LoRA adapter on its own copy of the base), loaded once per process."""
    return load_model(location, adapter)


def load_model(location: str, adapter: str | None = None):
    """Tokenizer and model in eval mode, uncached; a LoRA adapter is applied to a fresh copy of the base."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if adapter is not None:
        from peft import PeftModel

        tokenizer, _ = _load(location)
        base = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)
        return tokenizer, PeftModel.from_pretrained(base, adapter).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        lm = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load model {location!r}: {exc}; pass a model folder, or a hub id "
                                 f"on a machine that can download it") from exc
    if tokenizer.chat_template is None:
        raise ProviderError(f"model {location!r} has no chat template; choose an instruct/chat model")
    return tokenizer, lm.eval()
