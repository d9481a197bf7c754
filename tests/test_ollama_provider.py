"""The Ollama provider, through the official client, against a local server speaking Ollama's REST API."""

from __future__ import annotations

import socket

import ollama
import pytest

from docbot.errors import ModelNotFoundError, ProviderError
from docbot.providers.ollama import OllamaProvider, ollama_serves
from tests.ollama_api_server import OllamaAPIServer

MODEL = "smollm2:135m"
MESSAGES = [
    {"role": "system", "content": "Answer from the context only.\n\nContext: The office opens at 9 am on weekdays."},
    {"role": "user", "content": "When does the office open?"},
]


@pytest.fixture(scope="module")
def server(smollm2):
    with OllamaAPIServer({MODEL: smollm2}) as running:
        yield running


def test_greedy_answer_equals_in_process_answer(server, smollm2):
    answer = OllamaProvider(MODEL, host=server.url).generate(MESSAGES, 40)
    assert answer.strip()
    assert answer == smollm2.generate(MESSAGES, 40)


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
