"""The Ollama provider, through the official client, against a local server speaking Ollama's REST API and
answering, like Ollama, with llama.cpp from the packaged SmolLM2 GGUF and a TEMPLATE made by docbot's own
`ollama_template`."""

from __future__ import annotations

import socket

import ollama
import pytest

from docbot.errors import ModelNotFoundError, ProviderError
from docbot.providers.ollama import OllamaProvider, ollama_serves
from docbot.tuning.ollama_export import ollama_template
from tests.ollama_api_server import OllamaAPIServer, packaged_model

MODEL = "smollm2:135m"
MESSAGES = [
    {"role": "system", "content": "Answer from the context only.\n\nContext: The office opens at 9 am on weekdays."},
    {"role": "user", "content": "When does the office open?"},
]
FACTS = [  # (context, question) pairs for comparing the two engines
    ("The office opens at 9 am on weekdays.", "When does the office open?"),
    ("The Velmora clinic opens at 06:45.", "When does the Velmora clinic open?"),
    ("Odalys Penhallow is the chief pharmacist.", "Who is the chief pharmacist?"),
    ("The maximum daily dose of Quorvane is 35 mg.", "What is the maximum daily dose of Quorvane?"),
    ("Parking is free for visitors on Sundays.", "Is parking free on Sundays?"),
    ("The library lends up to 12 books per card.", "How many books can I borrow?"),
]


@pytest.fixture(scope="module")
def server(smollm2, models_dir):
    with OllamaAPIServer({MODEL: packaged_model("SmolLM2-135M-Instruct", models_dir, smollm2.tokenizer)}) as running:
        yield running


def _leading_share(a: str, b: str) -> float:
    """The share of words two answers have in common from the start, of the longer answer's words."""
    a_words, b_words = a.split(), b.split()
    same = next((i for i, (x, y) in enumerate(zip(a_words, b_words)) if x != y), min(len(a_words), len(b_words)))
    return same / max(len(a_words), len(b_words), 1)


@pytest.mark.slow
def test_answers_agree_with_the_in_process_model(server, smollm2):
    """llama.cpp on the Q4_1 GGUF (through the server) and transformers on its fp32 conversion are different
    engines: the weights have equal values, but llama.cpp multiplies them in Q4_1 with 8-bit activations, so
    greedy answers drift apart once two candidate tokens are close. Measured on these 6 questions, 32 tokens:
    4 of 6 answers identical, mean leading-word share 0.80 (the "office" answer agrees for 7 of 12 words, the
    "pharmacist" one for 4 of 17). Asserted with margin: at least 2 identical, mean share >= 0.5, and every
    answer agrees on its first two words."""
    provider = OllamaProvider(MODEL, host=server.url)
    pairs = []
    for context, question in FACTS:
        messages = [{"role": "system", "content": f"Answer from the context only.\n\nContext: {context}"},
                    {"role": "user", "content": question}]
        pairs.append((provider.generate(messages, 32), smollm2.generate(messages, 32)))
    shares = [_leading_share(ours, theirs) for ours, theirs in pairs]
    assert all(ours.strip() for ours, _ in pairs)
    assert sum(ours == theirs for ours, theirs in pairs) >= 2, pairs
    assert sum(shares) / len(shares) >= 0.5, (shares, pairs)
    assert all(ours.split()[:2] == theirs.split()[:2] for ours, theirs in pairs), pairs


def test_show_has_the_exported_template(server, smollm2):
    template, stops = ollama_template(smollm2.tokenizer)
    shown = ollama.Client(host=server.url).show(MODEL)
    assert shown.template == template and shown.details.format == "gguf"
    assert all(f'"{stop}"' in shown.parameters for stop in stops)


def test_raw_generate_completes_the_rendered_prompt_like_chat(server, smollm2):
    """The chat's TEMPLATE renders what the tokenizer's chat template does, so sending that text raw gives the
    same greedy answer from the same engine."""
    client = ollama.Client(host=server.url)
    chat = client.chat(model=MODEL, messages=MESSAGES, options={"num_predict": 24})
    raw = client.generate(model=MODEL, raw=True, options={"num_predict": 24},
                          prompt=smollm2.tokenizer.apply_chat_template(MESSAGES, tokenize=False,
                                                                       add_generation_prompt=True))
    assert chat.message.content.strip() and raw.response == chat.message.content
    assert raw.prompt_eval_count > 20 and 0 < raw.eval_count <= 24 and raw.done_reason in ("stop", "length")


def test_streaming_yields_several_pieces(server):
    pieces = list(OllamaProvider(MODEL, host=server.url).stream(MESSAGES, 20))
    assert len(pieces) > 1


def test_missing_model_says_to_pull_it(server):
    with pytest.raises(ModelNotFoundError, match="ollama pull"):
        OllamaProvider("no-such-model:1b", host=server.url)


def test_no_server_says_to_start_one():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProviderError, match="ollama serve"):
        OllamaProvider(MODEL, host=f"http://127.0.0.1:{port}", timeout=5.0)


def test_generate_endpoint_returns_text(server):
    reply = ollama.Client(host=server.url).generate(model=MODEL, prompt="Say hello.", options={"num_predict": 20})
    assert reply.response.strip()
    assert reply.done


def test_non_ollama_server_is_a_provider_error():
    """Something else on the port (here: HTML from /api/tags) must not crash provider="auto" with a JSON error."""

    def html(req):
        body = b"<html>not ollama</html>"
        req.send_response(200)
        req.send_header("Content-Type", "text/html")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    with OllamaAPIServer({}) as other:
        other.routes[("GET", "/api/tags")] = html
        with pytest.raises(ProviderError, match="does not answer like an Ollama server"):
            OllamaProvider(MODEL, host=other.url, timeout=5.0)
        assert not ollama_serves(MODEL, host=other.url)
