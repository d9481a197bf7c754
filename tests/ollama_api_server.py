"""A small stand-in for an Ollama server, so the official `ollama` client can be tested without installing Ollama.

It speaks the part of Ollama's REST API that docbot uses (/api/tags, /api/show, /api/chat, /api/generate, blobs,
create) with the field names the client's pydantic types expect, and answers the way Ollama does inside: a model
is a GGUF file, a TEMPLATE and stop strings (`GGUFModel`); a chat is rendered from the TEMPLATE by Go's own
text/template (`GoTemplateRenderer`, which needs `go` on PATH) into one raw prompt, and that prompt is completed by
llama.cpp (xllamacpp's raw completion endpoint, driven directly here: the server is backed by a real engine, never
by docbot's providers under test), greedily and cut at the stop strings, streamed back as Ollama's NDJSON.

Models can also be created through the API, as `ollama create` does: `HEAD/POST /api/blobs/sha256:<hex>` store a
file (the digest is verified) and `POST /api/create` with `files={"x.gguf": digest}`, `template` and `parameters`
registers that GGUF with its TEMPLATE and stop strings. Each GGUF is loaded by llama.cpp once per process, on first
use (`_engine`), with one thread.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import queue
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from time import perf_counter_ns

Messages = list[dict]
DEFAULT_NUM_PREDICT = 128  # Ollama's own default is unbounded; a test server should always stop
SEED = 0  # greedy decoding ignores it; fixed anyway
N_CTX = 4096
N_THREADS = 1  # 2 shared cores here: with 2 threads, decoding took 0.5 s a token under load, with 1 thread 16 ms


def _with_tag(name: str) -> str:
    """Ollama treats a name without a tag as ':latest'."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class GGUFModel:
    """What Ollama keeps for a model: the GGUF weights, the TEMPLATE and the `stop` parameters."""

    gguf: Path
    template: str
    stop: list[str] = field(default_factory=list)


def packaged_model(name: str, models_dir: str | Path, tokenizer) -> GGUFModel:
    """A docbot packaged model as Ollama would hold it: its GGUF file with a TEMPLATE made by docbot's own
    `ollama_template` from `tokenizer` (so the exported template is what the server renders)."""
    from docbot.providers.base_models import packaged_gguf
    from docbot.tuning.ollama_export import ollama_template

    template, stop = ollama_template(tokenizer)
    return GGUFModel(packaged_gguf(name, models_dir), template, stop)


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
    """Serves `models` (Ollama name -> GGUFModel) on 127.0.0.1 from a background thread; use it as a context manager.

    `routes` maps (method, path) to a handler taking the request; add entries to extend the API.
    Generation is serialised with one lock, as one Ollama runner handles one request at a time.
    """

    def __init__(self, models: dict[str, GGUFModel], host: str = "127.0.0.1", port: int = 0) -> None:
        if host != "127.0.0.1":
            raise ValueError("the test server only binds 127.0.0.1")
        self.models = {_with_tag(name): model for name, model in models.items()}
        self.routes: dict[tuple[str, str], Callable[[_Request], None]] = {
            ("GET", "/api/tags"): self._tags,
            ("POST", "/api/show"): self._show,
            ("POST", "/api/chat"): self._chat,
            ("POST", "/api/generate"): self._generate,
            ("HEAD", "/api/blobs/"): self._blob_exists,
            ("POST", "/api/blobs/"): self._blob_upload,
            ("POST", "/api/create"): self._create,
        }
        self._store: Path | None = None  # blobs, made on the first upload
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
        """The /api/tags record for a model, with details read from its GGUF's metadata."""
        model = self.models[name]
        info = _gguf_info(str(model.gguf))
        return {"name": name, "model": name, "modified_at": _now(), "size": info["size"],
                "digest": hashlib.sha256(f"{name}\0{model.gguf}".encode()).hexdigest(),
                "details": {"parent_model": "", "format": "gguf", "family": info["family"],
                            "families": [info["family"]] if info["family"] else None,
                            "parameter_size": f"{info['parameters'] / 1e6:.0f}M",
                            "quantization_level": info["quantization"]}}

    def _tags(self, req: _Request) -> None:
        req.send_json(200, {"models": [self._entry(name) for name in self.models]})

    def _show(self, req: _Request) -> None:
        data = req.json_body()
        if data is None:
            return
        name = _with_tag(data.get("model") or data.get("name") or "")
        if name not in self.models:
            return req.send_json(404, {"error": f"model '{data.get('model') or data.get('name')}' not found"})
        entry, model = self._entry(name), self.models[name]
        parameters = "".join(f'stop                           "{stop}"\n' for stop in model.stop)
        # The client's ShowResponse requires `model_info` (no default), so it is always sent.
        req.send_json(200, {"modified_at": entry["modified_at"], "details": entry["details"], "model_info": {},
                            "license": "", "modelfile": f"FROM {model.gguf}\nTEMPLATE \"\"\"{model.template}\"\"\"\n",
                            "parameters": parameters, "template": model.template,
                            "capabilities": ["completion"]})

    def _chat(self, req: _Request) -> None:
        data = req.json_body()
        if data is not None:
            messages = [{"role": m.get("role", "user"), "content": m.get("content") or ""}
                        for m in data.get("messages") or []]
            self._answer(req, data, messages, None, lambda text: {"message": {"role": "assistant", "content": text}})

    def _generate(self, req: _Request) -> None:
        """A raw prompt goes to llama.cpp as it is; a plain one is rendered from the TEMPLATE as a one-turn chat."""
        data = req.json_body()
        if data is not None:
            raw = data["prompt"] if data.get("raw") and data.get("prompt") else None
            messages = ([{"role": "system", "content": data["system"]}] if data.get("system") else [])
            messages += [{"role": "user", "content": data["prompt"]}] if data.get("prompt") else []
            self._answer(req, data, messages, raw, lambda text: {"response": text})

    def _answer(self, req: _Request, data: dict, messages: Messages, raw: str | None,
                shape: Callable[[str], dict]) -> None:
        """Shared by chat and generate: look the model up, render its TEMPLATE (unless `raw`), complete the prompt
        with llama.cpp greedily, stream the pieces or send one object."""
        name = data.get("model") or ""
        model = self.models.get(_with_tag(name))
        if model is None:
            return req.send_json(404, {"error": f'model "{name}" not found, try pulling it first'})
        limit = (data.get("options") or {}).get("num_predict")
        limit = DEFAULT_NUM_PREDICT if limit is None or limit < 0 else limit
        prompt = raw if raw is not None else go_template_renderer().render(model.template, messages) if messages else ""
        stats: dict = {}

        def pieces() -> Iterator[str]:
            start, final, load = perf_counter_ns(), {}, 0
            if prompt:  # like Ollama, an empty prompt only "loads" the model
                with self._generating:
                    loaded = perf_counter_ns()
                    engine = _engine(*_file_key(model.gguf))
                    load = perf_counter_ns() - loaded
                    with closing(engine.complete(prompt, model.stop, limit, final)) as stream:
                        yield from stream
            timings, usage = final.get("timings") or {}, final.get("usage") or {}
            stats.update(done=True, done_reason=final.get("finish_reason") or "load",
                         total_duration=perf_counter_ns() - start, load_duration=load,
                         prompt_eval_count=usage.get("prompt_tokens", 0),
                         prompt_eval_duration=int(timings.get("prompt_ms", 0) * 1e6),
                         eval_count=usage.get("completion_tokens", 0),
                         eval_duration=int(timings.get("predicted_ms", 0) * 1e6))

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
        """Ollama's create from uploaded files: one GGUF, a TEMPLATE and parameters (stop; sampling parameters are
        accepted and ignored: this server always decodes greedily). The GGUF is loaded on first use, as Ollama
        does; its header and the TEMPLATE are checked here, before anything is registered."""
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
        model = GGUFModel(blob, data.get("template") or "{{ .Prompt }}", [stop] if isinstance(stop, str) else
                          list(stop))
        try:
            _gguf_info(str(blob))
            renderer = go_template_renderer()  # a missing `go` fails here, not at the first chat
            if ".Messages" in model.template:  # others can only be used with raw prompts here
                renderer.render(model.template, [{"role": "user", "content": "hi"}])
        except (ValueError, OSError) as exc:  # not a GGUF file; a template Go cannot parse or run
            return req.send_json(400, {"error": f"{type(exc).__name__}: {exc}"})

        def progress() -> Iterator[dict]:
            yield {"status": "parsing GGUF"}
            yield {"status": f"using existing layer {files[gguf_name]}"}
            yield {"status": "writing manifest"}
            with self._generating:  # not while another request generates with the model being replaced
                self.models[_with_tag(name)] = model
            yield {"status": "success"}

        if data.get("stream", True):
            return req.send_ndjson(progress())
        for status in progress():
            pass
        req.send_json(200, status)


# --- llama.cpp ---------------------------------------------------------------------------------------------------


class _LlamaCpp:
    """One GGUF loaded by llama.cpp (xllamacpp's in-process server, one slot), completing raw prompts.

    xllamacpp's calls block until the answer is complete and report streamed chunks through a callback, so the
    request runs in a worker thread that feeds a queue; the callback returning True cancels it (a client that
    stopped reading).
    """

    def __init__(self, path: str) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = path
        params.n_ctx = N_CTX
        params.n_parallel = 1
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = N_THREADS
        params.sampling.temp, params.sampling.top_k, params.sampling.seed = 0.0, 1, SEED
        params.verbosity = 0
        params.api_keys = [secrets.token_hex(16)]  # its localhost HTTP listener: locked, only called in process
        params.ui = False
        params.endpoint_slots = False
        self.server = xllamacpp.Server(params)

    def complete(self, prompt: str, stop: list[str], n_predict: int, final: dict) -> Iterator[str]:
        """Stream the completion of `prompt` (special tokens in it are parsed; BOS is added when the GGUF asks for
        it), cut at the `stop` strings; `final` receives the last chunk's `finish_reason`, `usage` and `timings`."""
        request = {"prompt": prompt, "n_predict": n_predict, "stop": list(stop), "temperature": 0.0, "top_k": 1,
                   "seed": SEED, "cache_prompt": True, "stream": True}
        chunks: queue.SimpleQueue = queue.SimpleQueue()
        closed, done = threading.Event(), object()

        def on_chunk(chunk: dict) -> bool:  # must not raise: xllamacpp would swallow it
            if closed.is_set():
                return True
            chunks.put(chunk)
            return False

        def run() -> None:
            try:
                self.server.handle_completions(request, on_chunk)
            except Exception as exc:  # a request llama.cpp refuses before streaming
                chunks.put(exc)
            finally:
                chunks.put(done)

        worker = threading.Thread(target=run, name="ollama-api-server-llamacpp", daemon=True)
        worker.start()
        try:
            while (chunk := chunks.get()) is not done:
                if isinstance(chunk, Exception):
                    raise RuntimeError(f"llama.cpp refused the request: {chunk}") from chunk
                if "error" in chunk:
                    raise RuntimeError(f"llama.cpp failed: {chunk['error']}")
                choice = (chunk.get("choices") or [{}])[0]
                if choice.get("text"):
                    yield choice["text"]
                if choice.get("finish_reason"):
                    final.update(finish_reason=choice["finish_reason"], usage=chunk.get("usage") or {},
                                 timings=chunk.get("timings") or {})
        finally:
            closed.set()
            worker.join()
        if "finish_reason" not in final:
            raise RuntimeError("llama.cpp ended the request without finishing the answer")


def _file_key(path: Path) -> tuple[str, int, int]:
    """A GGUF's identity for the cache: resolved path, size and modification time (a replaced file is reloaded)."""
    stat = Path(path).stat()
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _engine(path: str, size: int, mtime_ns: int) -> _LlamaCpp:
    """Each GGUF is loaded once per process (a few recent ones kept), by whichever server asks first."""
    return _LlamaCpp(path)


@functools.lru_cache(maxsize=16)
def _gguf_info(path: str) -> dict:
    """Details for /api/tags from the GGUF header: family, parameter count, quantization (Ollama's spelling)."""
    from gguf import GGUFReader, LlamaFileType

    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ValueError(f"{Path(path).name} is not a GGUF file")
    reader = GGUFReader(path)

    def value(key: str):
        found = reader.fields.get(key)
        return found.contents() if found is not None else None

    file_type = value("general.file_type")
    quantization = LlamaFileType(file_type).name.split("_", 1)[1] if file_type is not None else ""
    return {"family": value("general.architecture") or "", "size": Path(path).stat().st_size,
            "parameters": sum(int(t.n_elements) for t in reader.tensors), "quantization": quantization}


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
