"""A small stand-in for an Ollama server, so the official `ollama` client can be tested without installing Ollama.

It speaks the part of Ollama's REST API that docbot uses (/api/tags, /api/show, /api/chat, /api/generate) with
the field names the client's pydantic types expect, and answers by calling a real docbot `Provider`. Because
decoding is greedy, an answer that travels client -> HTTP -> server -> provider must equal the provider's own.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from time import perf_counter_ns

from docbot.providers.base import Messages, Provider

_QUANT = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16"}  # Ollama's spelling
DEFAULT_NUM_PREDICT = 128  # Ollama's own default is unbounded; a test server should always stop


def _with_tag(name: str) -> str:
    """Ollama treats a name without a tag as ':latest'."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class _Request(BaseHTTPRequestHandler):
    """Parses one request, finds its handler in the server's `routes`, and writes JSON or chunked NDJSON."""

    protocol_version = "HTTP/1.1"  # keep-alive, and chunked streaming like the real server
    server: _HTTPServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        handler = self.server.api.routes.get((method, self.path.split("?", 1)[0]))
        if handler is None:
            self.send_json(404, {"error": f"404 page not found: {method} {self.path}"})
            return
        try:
            handler(self)
        except Exception as exc:  # before any bytes were sent (streams report their own errors): answer 500
            self.send_json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def json_body(self) -> dict | None:
        """The request's JSON object, or None after answering 400 (as Ollama does for malformed bodies)."""
        try:
            data = json.loads(self.body() or b"{}")
        except ValueError as exc:
            self.send_json(400, {"error": f"invalid JSON: {exc}"})
            return None
        if not isinstance(data, dict):
            self.send_json(400, {"error": "expected a JSON object"})
            return None
        return data

    def send_json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_ndjson(self, lines: Iterator[dict]) -> None:
        """One chunk per JSON line, flushed at once, so the client sees pieces while the model still runs."""
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for obj in lines:
                data = json.dumps(obj).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: stop generating too
            self.close_connection = True
        except Exception as exc:  # like Ollama, a failure mid-stream is one last line with "error"
            data = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
        finally:
            getattr(lines, "close", lambda: None)()

    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    api: OllamaAPIServer


class OllamaAPIServer:
    """Serves `models` (Ollama name -> Provider) on 127.0.0.1 from a background thread; use it as a context manager.

    `routes` maps (method, path) to a handler taking the request; add entries to extend the API.
    Generation is serialised with one lock, as one Ollama runner handles one request at a time.
    """

    def __init__(self, models: dict[str, Provider], host: str = "127.0.0.1", port: int = 0) -> None:
        if host != "127.0.0.1":
            raise ValueError("the test server only binds 127.0.0.1")
        self.models = {_with_tag(name): provider for name, provider in models.items()}
        self.routes: dict[tuple[str, str], Callable[[_Request], None]] = {
            ("GET", "/api/tags"): self._tags,
            ("POST", "/api/show"): self._show,
            ("POST", "/api/chat"): self._chat,
            ("POST", "/api/generate"): self._generate,
        }
        self._generating = threading.Lock()
        self._httpd = _HTTPServer((host, port), _Request)
        self._httpd.api = self
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> OllamaAPIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="ollama-api-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _entry(self, name: str) -> dict:
        """The /api/tags record for a model; size and details come from the provider's weights when it has them."""
        lm = getattr(self.models[name], "lm", None)
        params = lm.num_parameters() if lm is not None else 0
        return {"name": name, "model": name, "modified_at": _now(),
                "size": sum(p.numel() * p.element_size() for p in lm.parameters()) if lm is not None else 0,
                "digest": hashlib.sha256(name.encode()).hexdigest(),
                "details": {"parent_model": "", "format": "safetensors",
                            "family": getattr(getattr(lm, "config", None), "model_type", ""),
                            "families": None, "parameter_size": f"{params / 1e6:.0f}M",
                            "quantization_level": _QUANT.get(str(getattr(lm, "dtype", "")), "")}}

    def _tags(self, req: _Request) -> None:
        req.send_json(200, {"models": [self._entry(name) for name in self.models]})

    def _show(self, req: _Request) -> None:
        data = req.json_body()
        if data is None:
            return
        name = _with_tag(data.get("model") or data.get("name") or "")
        if name not in self.models:
            return req.send_json(404, {"error": f"model '{data.get('model') or data.get('name')}' not found"})
        entry = self._entry(name)
        # The client's ShowResponse requires `model_info` (no default), so it is always sent.
        req.send_json(200, {"modified_at": entry["modified_at"], "details": entry["details"], "model_info": {},
                            "license": "", "modelfile": f"FROM {name}\n", "parameters": "", "template": "",
                            "capabilities": ["completion"]})

    def _chat(self, req: _Request) -> None:
        data = req.json_body()
        if data is not None:
            messages = [{"role": m.get("role", "user"), "content": m.get("content") or ""}
                        for m in data.get("messages") or []]
            self._answer(req, data, messages, lambda text: {"message": {"role": "assistant", "content": text}})

    def _generate(self, req: _Request) -> None:
        data = req.json_body()
        if data is not None:
            messages = ([{"role": "system", "content": data["system"]}] if data.get("system") else [])
            messages += [{"role": "user", "content": data["prompt"]}] if data.get("prompt") else []
            self._answer(req, data, messages, lambda text: {"response": text})

    def _answer(self, req: _Request, data: dict, messages: Messages, shape: Callable[[str], dict]) -> None:
        """Shared by chat and generate: look the model up, run the provider greedily, stream or send one object."""
        name = data.get("model") or ""
        provider = self.models.get(_with_tag(name))
        if provider is None:
            return req.send_json(404, {"error": f'model "{name}" not found, try pulling it first'})
        limit = (data.get("options") or {}).get("num_predict")
        limit = DEFAULT_NUM_PREDICT if limit is None or limit < 0 else limit
        stats: dict = {}

        def pieces() -> Iterator[str]:
            start, text = perf_counter_ns(), ""
            if messages:  # like Ollama, an empty prompt only "loads" the model
                with self._generating, closing(provider.stream(messages, limit)) as stream:
                    for piece in stream:
                        text += piece
                        yield piece
            count, elapsed = _count_tokens(provider, text), perf_counter_ns() - start
            stats.update(done=True, done_reason="load" if not messages else "length" if count >= limit else "stop",
                         total_duration=elapsed, load_duration=0, prompt_eval_count=_count_prompt(provider, messages),
                         prompt_eval_duration=0, eval_count=count, eval_duration=elapsed)

        def lines() -> Iterator[dict]:
            with closing(pieces()) as parts:
                for piece in parts:
                    yield {"model": name, "created_at": _now(), **shape(piece), "done": False}
            yield {"model": name, "created_at": _now(), **shape(""), **stats}

        if data.get("stream", True):  # Ollama streams unless told not to
            return req.send_ndjson(lines())
        text = "".join(pieces())
        req.send_json(200, {"model": name, "created_at": _now(), **shape(text), **stats})


def _count_tokens(provider: Provider, text: str) -> int:
    """Generated tokens, by re-tokenizing the answer (close to, not always exactly, the generated count)."""
    tokenizer = getattr(provider, "tokenizer", None)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer and text else len(text.split())


def _count_prompt(provider: Provider, messages: Messages) -> int:
    prompt_ids = getattr(provider, "prompt_ids", None)
    return int(prompt_ids(messages)["input_ids"].shape[-1]) if prompt_ids and messages else 0
