"""A small stand-in for an Ollama server, so the official `ollama` client can be tested without installing Ollama.

It speaks the part of Ollama's REST API that docbot uses (/api/tags, /api/show, /api/chat, /api/generate) with
the field names the client's pydantic types expect, and answers by calling a real docbot `Provider`. Because
decoding is greedy, an answer that travels client -> HTTP -> server -> provider must equal the provider's own.

Models can also be created through the API, as `ollama create` does: `HEAD/POST /api/blobs/sha256:<hex>` store a
file (the digest is verified) and `POST /api/create` with `files={"x.gguf": digest}`, `template` and `parameters`
registers a `GGUFTemplateProvider`: weights and tokenizer loaded from the GGUF by transformers (`gguf_file=`), the
prompt rendered from the TEMPLATE by Go's own text/template exactly as Ollama renders it (`GoTemplateRenderer`,
which needs `go` on PATH), generation cut at the `stop` strings.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from time import perf_counter_ns

from docbot.providers.base import Messages, Provider
from docbot.providers.transformers_local import TransformersProvider

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

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        routes = self.server.api.routes
        # exact paths first; a route ending in "/" takes any last path segment (e.g. /api/blobs/<digest>)
        handler = routes.get((method, path)) or routes.get((method, path.rsplit("/", 1)[0] + "/"))
        if handler is None:
            if method == "HEAD":
                return self.send_empty(404)
            self.send_json(404, {"error": f"404 page not found: {method} {self.path}"})
            return
        try:
            handler(self)
        except Exception as exc:  # before any bytes were sent (streams report their own errors): answer 500
            self.send_json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def body(self) -> bytes:
        return b"".join(self.body_blocks())

    def body_blocks(self) -> Iterator[bytes]:
        """The request body in blocks, with Content-Length or chunked transfer encoding."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                yield self.rfile.read(size)
                self.rfile.readline()  # the CRLF after each chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            block = self.rfile.read(min(left, 1 << 20))
            if not block:
                break
            left -= len(block)
            yield block

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

    def send_empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

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
            ("HEAD", "/api/blobs/"): self._blob_exists,
            ("POST", "/api/blobs/"): self._blob_upload,
            ("POST", "/api/create"): self._create,
        }
        self._store: Path | None = None  # blobs and created models, made on the first upload
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
        if self._store is not None:
            shutil.rmtree(self._store, ignore_errors=True)

    def _entry(self, name: str) -> dict:
        """The /api/tags record for a model; size and details come from the provider's weights when it has them."""
        lm = getattr(self.models[name], "lm", None)
        params = lm.num_parameters() if lm is not None else 0
        return {"name": name, "model": name, "modified_at": _now(),
                "size": sum(p.numel() * p.element_size() for p in lm.parameters()) if lm is not None else 0,
                "digest": hashlib.sha256(name.encode()).hexdigest(),
                "details": {"parent_model": "", "format": getattr(self.models[name], "format", "safetensors"),
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
                            "license": "", "modelfile": f"FROM {name}\n", "parameters": "",
                            "template": getattr(self.models[name], "template", ""),
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


    # --- creating models: /api/blobs and /api/create ------------------------------------------------------------

    def _blob_path(self, req: _Request) -> Path | None:
        """The store path for the request's `sha256:<hex>` digest, or None after answering 400."""
        digest = req.path.split("?", 1)[0].rsplit("/", 1)[-1]
        if not re.fullmatch(r"sha256[:-][0-9a-f]{64}", digest):
            if req.command == "HEAD":
                req.send_empty(400)
            else:
                req.send_json(400, {"error": f"invalid digest format: {digest!r}"})
            return None
        if self._store is None:
            self._store = Path(tempfile.mkdtemp(prefix="ollama-api-server-"))
            (self._store / "blobs").mkdir()
        return self._store / "blobs" / digest.replace(":", "-")  # Ollama's own file naming

    def _blob_exists(self, req: _Request) -> None:
        path = self._blob_path(req)
        if path is not None:
            req.send_empty(200 if path.is_file() else 404)

    def _blob_upload(self, req: _Request) -> None:
        path = self._blob_path(req)
        if path is None:
            return
        digest, partial = hashlib.sha256(), path.with_suffix(".partial")
        with open(partial, "wb") as fh:
            for block in req.body_blocks():
                digest.update(block)
                fh.write(block)
        if f"sha256-{digest.hexdigest()}" != path.name:
            partial.unlink()
            return req.send_json(400, {"error": "digest mismatch, expected "
                                                f"{path.name.replace('-', ':', 1)}, got sha256:{digest.hexdigest()}"})
        partial.replace(path)
        req.send_empty(201)

    def _create(self, req: _Request) -> None:
        """Ollama's create from uploaded files: one GGUF, a TEMPLATE and parameters (stop, temperature...)."""
        data = req.json_body()
        if data is None:
            return
        name, files = data.get("model") or "", data.get("files") or {}
        ggufs = [file for file in files if file.endswith(".gguf")]
        if not name or len(ggufs) != 1:
            return req.send_json(400, {"error": "create needs a model name and exactly one .gguf in files "
                                                "(the test server creates models from GGUF files only)"})
        gguf_name = ggufs[0]
        blob = self._store / "blobs" / files[gguf_name].replace(":", "-") if self._store else None
        if blob is None or not blob.is_file() or Path(gguf_name).name != gguf_name:
            return req.send_json(400, {"error": f"no blob {files[gguf_name]} for {gguf_name}; upload it first"})
        stop = (data.get("parameters") or {}).get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)

        def progress() -> Iterator[dict]:
            yield {"status": "parsing GGUF"}
            folder = self._store / "models" / hashlib.sha256(name.encode()).hexdigest()[:16]
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            (folder / gguf_name).symlink_to(blob)
            yield {"status": f"using existing layer {files[gguf_name]}"}
            provider = GGUFTemplateProvider(name, folder / gguf_name, data.get("template") or "{{ .Prompt }}",
                                            stop)
            yield {"status": "writing manifest"}
            with self._generating:  # not while another request generates with the model being replaced
                self.models[_with_tag(name)] = provider
            yield {"status": "success"}

        if data.get("stream", True):
            return req.send_ndjson(progress())
        for status in progress():
            pass
        req.send_json(200, status)


class GGUFTemplateProvider(TransformersProvider):
    """A model created through /api/create: the GGUF's weights and tokenizer (transformers, `gguf_file=`), the
    prompt rendered from the Ollama TEMPLATE by Go's text/template, generation cut at the stop strings.

    Stop strings that are single special tokens (`<|im_end|>`) end generation as end-of-sequence ids, like
    llama.cpp's end-of-generation tokens; any other stop string is cut from the streamed text.
    """

    format = "gguf"

    def __init__(self, name: str, gguf_path: Path, template: str, stop: list[str]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model, self.location, self.template, self.stop = name, str(gguf_path), template, stop
        self.renderer = go_template_renderer()  # before loading: a missing `go` fails fast
        folder, file = str(gguf_path.parent), gguf_path.name
        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        self.lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32).eval()
        self.add_bos = _gguf_add_bos(gguf_path)
        ends = self.lm.generation_config.eos_token_id
        ends = [ends] if isinstance(ends, int) else list(ends or [])
        for text in stop:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) == 1 and text in self.tokenizer.all_special_tokens and ids[0] not in ends:
                ends.append(ids[0])
        self.lm.generation_config.eos_token_id = ends

    def prompt_ids(self, messages: Messages):
        text = self.renderer.render(self.template, messages)
        if self.add_bos and self.tokenizer.bos_token and not text.startswith(self.tokenizer.bos_token):
            text = self.tokenizer.bos_token + text  # llama.cpp adds BOS when the GGUF asks for it
        return self.tokenizer(text, return_tensors="pt", add_special_tokens=False)

    def stream(self, messages: Messages, max_new_tokens: int) -> Iterator[str]:
        pending = ""
        with closing(super().stream(messages, max_new_tokens)) as pieces:
            for piece in pieces:
                pending += piece
                hits = [pending.find(s) for s in self.stop if s in pending]
                if hits:
                    if pending[:min(hits)]:
                        yield pending[:min(hits)]
                    return  # closing the inner stream stops generation
                # hold back a tail that could be the start of a stop string
                hold = max((n for s in self.stop for n in range(1, len(s)) if pending.endswith(s[:n])), default=0)
                if len(pending) > hold:
                    yield pending[:len(pending) - hold]
                    pending = pending[len(pending) - hold:]
        if pending:
            yield pending


def _gguf_add_bos(path: Path) -> bool:
    from gguf import GGUFReader

    field = GGUFReader(str(path)).fields.get("tokenizer.ggml.add_bos_token")
    return bool(field.parts[field.data[0]][0]) if field is not None and field.data else False


# Ollama renders a TEMPLATE like this (ollama/ollama template/template.go, Template.Execute): `collate` merges
# consecutive messages of one role and gathers the system messages into .System, the template is executed with
# missingkey=zero over {System, Messages, Tools, Response}. Only templates over .Messages are handled here.
_GO_RENDERER = r"""
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type request struct {
	Template string    `json:"template"`
	Messages []Message `json:"messages"`
}

func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		msg := msgs[i]
		if msg.Role == "system" {
			system = append(system, msg.Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msg.Role {
			collated[len(collated)-1].Content += "\n\n" + msg.Content
		} else {
			collated = append(collated, &msg)
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "bad input:", err)
		os.Exit(2)
	}
	if !strings.Contains(req.Template, ".Messages") {
		fmt.Fprintln(os.Stderr, "only templates over .Messages are supported by this renderer")
		os.Exit(2)
	}
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(req.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "template:", err)
		os.Exit(1)
	}
	system, messages := collate(req.Messages)
	data := map[string]any{"System": system, "Messages": messages, "Tools": nil, "Response": ""}
	if err := tmpl.Execute(os.Stdout, data); err != nil {
		fmt.Fprintln(os.Stderr, "execute:", err)
		os.Exit(1)
	}
}
"""


class GoTemplateRenderer:
    """Renders Ollama TEMPLATEs with Go's own text/template through a small compiled helper program."""

    def __init__(self, workdir: Path) -> None:
        go = shutil.which("go")
        if go is None:
            raise RuntimeError("`go` is not installed; Ollama templates are rendered with Go's text/template "
                               "(apt-get install -y golang-go)")
        source = workdir / "main.go"
        source.write_text(_GO_RENDERER, encoding="utf-8")
        self.binary = workdir / "ollama-template"
        built = subprocess.run([go, "build", "-o", str(self.binary), str(source)], check=False,
                               capture_output=True, text=True, cwd=workdir)
        if built.returncode != 0:
            raise RuntimeError(f"go build failed:\n{built.stderr}")

    def render(self, template: str, messages: Messages) -> str:
        done = subprocess.run([str(self.binary)], input=json.dumps({"template": template, "messages": messages}),
                              check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise ValueError(f"Go template rendering failed: {done.stderr.strip()}")
        return done.stdout


@functools.lru_cache(maxsize=1)
def go_template_renderer() -> GoTemplateRenderer:
    """The renderer, compiled once per process (a few seconds the first time, then Go's build cache)."""
    workdir = Path(tempfile.mkdtemp(prefix="ollama-template-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    return GoTemplateRenderer(workdir)


def _count_tokens(provider: Provider, text: str) -> int:
    """Generated tokens, by re-tokenizing the answer (close to, not always exactly, the generated count)."""
    tokenizer = getattr(provider, "tokenizer", None)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer and text else len(text.split())


def _count_prompt(provider: Provider, messages: Messages) -> int:
    prompt_ids = getattr(provider, "prompt_ids", None)
    return int(prompt_ids(messages)["input_ids"].shape[-1]) if prompt_ids and messages else 0
