"""Export a fine-tuned model: merge the LoRA adapter into its base, convert that to an f16 GGUF with llama.cpp's own
converter, and write the Ollama `Modelfile` (or create the model on an Ollama server through its API).

    merged = merge_adapter(base_location, adapter_dir, "models/medical_merged")
    gguf = export_gguf(merged, "models/medical.f16.gguf")
    print(modelfile(gguf, AutoTokenizer.from_pretrained(merged)))      # or: export_for_ollama(merged, out_dir)
    ollama_create(ollama.Client(), "medical-bot", gguf, *ollama_template(tokenizer))

The converter is `convert_hf_to_gguf.py` from the llama.cpp sources vendored in the `llama-cpp-python` source
distribution (nothing is compiled). It is downloaded once with pip into `$DOCBOT_CACHE/llama.cpp-<version>`
(default `~/.cache/docbot/llama.cpp-<version>`) and run in a subprocess with this interpreter.

The Ollama TEMPLATE is the most fragile part of an export: a template that differs from the one the model was
trained with by one newline silently degrades every answer. `ollama_template` therefore does not translate Jinja;
it recognises the ChatML layout (`<|im_start|>role\\ncontent<|im_end|>\\n`, used by SmolLM2, Qwen and docbot's tiny
test model), including a default system message the Jinja template inserts when none is given, and then checks
the Go template's output against the tokenizer's own `apply_chat_template` on several conversations; any
difference is refused with an error rather than exported.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ._io import write_json_atomic
from .base_models import base_fingerprint
from .errors import DocbotError, ProviderError
from .training import ADAPTER_MANIFEST

__all__ = [
    "LLAMA_CPP_PYTHON_VERSION", "MERGED_MANIFEST", "converter_dir", "ensure_converter", "export_for_ollama",
    "export_gguf", "merge_adapter", "modelfile", "ollama_create", "ollama_template",
]

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
MERGED_MANIFEST = "docbot_merged.json"


# ---------------------------------------------------------------------------------------------------- merging


def merge_adapter(base_location: str, adapter_dir: str, out_dir: str) -> Path:
    """Merge a PEFT LoRA adapter into its fp32 base (`merge_and_unload`) and save a standalone model folder.

    `out_dir` receives the merged safetensors, the tokenizer with its chat template (the adapter's copy when it
    has one: that is the template training used) and `docbot_merged.json`. The folder is written beside
    `out_dir` under a temporary name and renamed when complete; an existing `out_dir` is never overwritten.
    When the adapter's `docbot_adapter.json` records a base fingerprint, a different base is refused.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, adapter = Path(out_dir), Path(adapter_dir)
    if out.exists():
        raise DocbotError(f"{out} already exists; a merged model is never overwritten: choose a new folder "
                          f"or remove the old one")
    if not (adapter / "adapter_config.json").is_file():
        raise DocbotError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    manifest = _read_json(adapter / ADAPTER_MANIFEST)
    _check_base(base_location, manifest)

    started = time.time()
    base = AutoModelForCausalLM.from_pretrained(base_location, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    tokenizer_source = adapter if (adapter / "tokenizer_config.json").is_file() else base_location
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    if tokenizer.chat_template is None:  # an adapter saved without the template: take the base's
        tokenizer.chat_template = AutoTokenizer.from_pretrained(base_location).chat_template

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json_atomic(staging / MERGED_MANIFEST, {
            "schema_version": 1,
            "base_model": (manifest or {}).get("base_model") or {"name": str(base_location),
                                                                  "location": str(base_location)},
            "adapter": {"path": str(adapter.resolve()), "manifest": manifest},
            "merged_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.time() - started, 1),
        })
        staging.chmod(0o755)
        if out.exists():  # appeared while we merged; renaming would replace an empty folder
            raise DocbotError(f"{out} appeared while merging; it is left as it is")
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _check_base(base_location: str, manifest: dict | None) -> None:
    """Refuse a base whose weights differ from the ones the adapter was trained on (when both are known)."""
    expected = ((manifest or {}).get("base_model") or {}).get("fingerprint")
    base = Path(base_location)
    if not expected or not base.is_dir():
        return
    try:
        recorded = base_fingerprint(base)  # recorded at conversion for a packaged base, else hashed now
    except FileNotFoundError:
        return
    if recorded != expected:
        trained_on = (manifest.get("base_model") or {}).get("name") or "another base model"
        raise DocbotError(f"the adapter was trained on {trained_on} (fingerprint {expected[:12]}), but "
                          f"{base_location} has fingerprint {recorded[:12]}; merge it into the base it was "
                          f"trained on")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------- GGUF export


def converter_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the unpacked converter lives: `<cache>/llama.cpp-<version>`."""
    root = Path(cache_dir or os.environ.get("DOCBOT_CACHE") or Path.home() / ".cache" / "docbot")
    return root / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


def _download_command(dest: str) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", dest]


def ensure_converter(cache_dir: str | os.PathLike | None = None) -> Path:
    """The llama.cpp folder holding `convert_hf_to_gguf.py`, `conversion/` and `gguf-py/`; downloaded once.

    The `llama-cpp-python` source distribution (~77 MB) vendors llama.cpp; only the converter's files are kept
    (~2 MB). The download runs pip, so it follows the machine's pip configuration (index, proxy).
    """
    target = converter_dir(cache_dir)
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        command = _download_command(str(staging / "sdist"))
        print(f"Downloading llama.cpp's GGUF converter once (llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} source, "
              f"~77 MB) into {target}", file=sys.stderr)
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        archives = sorted((staging / "sdist").glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not archives:
            manual = shlex.join(_download_command("DIR"))
            raise DocbotError(
                f"could not download llama.cpp's converter ({_tail(done.stderr or done.stdout, 3)}). Run "
                f"`{manual}`, unpack the archive, and copy its vendor/llama.cpp folder to {target} "
                f"(or set DOCBOT_CACHE to a folder that holds llama.cpp-{LLAMA_CPP_PYTHON_VERSION}/)")
        unpacked = staging / "llama.cpp"
        _extract_converter(archives[0], unpacked)
        unpacked.chmod(0o755)
        try:
            unpacked.rename(target)
        except OSError:  # another process finished first: use its copy
            if not (target / "convert_hf_to_gguf.py").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _extract_converter(archive: Path, dest: Path) -> None:
    """Unpack only `vendor/llama.cpp/{convert_hf_to_gguf.py, conversion/, gguf-py/, LICENSE}` into `dest`."""
    wanted = ("convert_hf_to_gguf.py", "LICENSE", "conversion/", "gguf-py/")
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            _, sep, rel = member.name.partition("/vendor/llama.cpp/")
            if sep and (rel in wanted or rel.startswith(wanted[2:])) and (member.isfile() or member.isdir()):
                member.name = rel
                members.append(member)
        tar.extractall(dest, members=members, filter="data")
    if not (dest / "convert_hf_to_gguf.py").is_file():
        raise DocbotError(f"{archive.name} holds no vendor/llama.cpp/convert_hf_to_gguf.py; "
                          f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} was expected")


def export_gguf(merged_dir: str, out_file: str, *, llama_cpp_dir: str | None = None,
                cache_dir: str | None = None) -> Path:
    """Convert a merged model folder to an f16 GGUF with llama.cpp's `convert_hf_to_gguf.py`.

    `llama_cpp_dir`: an existing llama.cpp checkout to use instead of the cached download. The GGUF is written
    under a temporary name beside `out_file` and renamed when the converter succeeded; an existing `out_file` is
    never overwritten. The GGUF carries the tokenizer and its chat template.
    """
    merged, out = Path(merged_dir), Path(out_file)
    if out.exists():
        raise DocbotError(f"{out} already exists; a GGUF export is never overwritten: choose a new file name")
    if not (merged / "config.json").is_file():
        raise DocbotError(f"{merged} is not a model folder (no config.json); merge the adapter first "
                          f"(docbot.export.merge_adapter)")
    llama_cpp = Path(llama_cpp_dir) if llama_cpp_dir else ensure_converter(cache_dir)
    script = llama_cpp / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise DocbotError(f"{llama_cpp} holds no convert_hf_to_gguf.py; pass a llama.cpp checkout")

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".gguf.tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    env = dict(os.environ)
    # The converter's own gguf-py (it may need newer tensor names than the installed `gguf` package) and its
    # `conversion/` package come first.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(llama_cpp / "gguf-py"), str(llama_cpp),
                                                      env.get("PYTHONPATH")]))
    try:
        done = subprocess.run([sys.executable, str(script), str(merged), "--outfile", str(tmp), "--outtype", "f16"],
                              check=False, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            hint = ""
            missing = re.search(r"No module named '([\w.]+)'", done.stderr or "")
            if missing:
                hint = f" (install it: `pip install {missing.group(1).split('.')[0]}`)"
            raise DocbotError(f"llama.cpp's converter failed on {merged}{hint}:\n{_tail(done.stderr, 15)}")
        with open(tmp, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise DocbotError(f"llama.cpp's converter wrote no GGUF for {merged}:\n{_tail(done.stderr, 15)}")
        tmp.chmod(0o644)
        if out.exists():
            raise DocbotError(f"{out} appeared while converting; it is left as it is")
        tmp.rename(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _tail(text: str | None, lines: int) -> str:
    kept = [line for line in (text or "").strip().splitlines() if line.strip()][-lines:]
    return "\n".join(kept) or "no output"


# ------------------------------------------------------------------------------------------ Ollama: the template

_START, _END = "<|im_start|>", "<|im_end|>"


@dataclass(frozen=True)
class _ChatML:
    """The ChatML layout: `head`, then `<|im_start|>role\\ncontent<|im_end|>\\n` per message, a default system turn
    when the conversation does not open with one, and `<|im_start|>assistant\\n` to start the answer."""

    head: str = ""
    default_system: str | None = None

    def render(self, messages: list[dict]) -> str:
        """What the Go template below renders (used to check it against the tokenizer's chat template)."""
        text = self.head
        for i, message in enumerate(messages):
            if i == 0 and message["role"] != "system" and self.default_system is not None:
                text += f"{_START}system\n{self.default_system}{_END}\n"
            text += f"{_START}{message['role']}\n{message['content']}{_END}\n"
        return text + f"{_START}assistant\n"

    def go_template(self) -> str:
        """The same in Go's text/template over Ollama's `.Messages` (each with `.Role` and `.Content`)."""
        default = ""
        if self.default_system is not None:
            default = ('{{ if and (eq $i 0) (ne $m.Role "system") }}'
                       f"{_START}system\n{_go_text(self.default_system)}{_END}\n{{{{ end }}}}")
        return (f"{_go_text(self.head)}"
                "{{ range $i, $m := .Messages }}"
                f"{default}"
                f"{_START}{{{{ $m.Role }}}}\n{{{{ $m.Content }}}}{_END}\n"
                "{{ end }}"
                f"{_START}assistant\n")


def _go_text(text: str) -> str:
    """Literal text for a Go template: as is, or as a quoted string action when it could be read as an action."""
    if "{{" not in text and "}}" not in text:
        return text
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"


# Conversations the Go template must render exactly like the tokenizer's chat template.
_PROBES = [
    [{"role": "user", "content": "U1"}],
    [{"role": "system", "content": "S1"}, {"role": "user", "content": "U1"}],
    [{"role": "system", "content": "S1\n\nwith lines"}, {"role": "user", "content": "U1"},
     {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2 {{ .Not }} \"quoted\""}],
    [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}],
]


def ollama_template(tokenizer) -> tuple[str, list[str]]:
    """`(TEMPLATE, stop strings)` for Ollama, equivalent to `tokenizer`'s chat template with a generation prompt.

    Only ChatML-style chat templates are supported; the result is checked against `apply_chat_template` on
    several conversations (with and without a system message, multi-turn) and any difference is an error.
    Ollama merges consecutive messages of the same role before rendering, so conversations should alternate
    (docbot's do).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise DocbotError("the tokenizer has no chat template; an Ollama TEMPLATE cannot be derived from it")

    def render(messages: list[dict]) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    unsupported = DocbotError(
        "the model's chat template is not ChatML (<|im_start|>role ... <|im_end|>), the only layout docbot "
        "translates to an Ollama TEMPLATE; write the TEMPLATE by hand (see Ollama's template docs) and check "
        "it against tokenizer.apply_chat_template")
    try:
        only_user = render(_PROBES[0])
    except Exception as exc:  # a template that cannot even render one user turn
        raise unsupported from exc
    turn = f"{_START}user\nU1{_END}\n{_START}assistant\n"
    if not only_user.endswith(turn):
        raise unsupported
    before = only_user[: -len(turn)]
    found = re.fullmatch(rf"(.*?){re.escape(_START)}system\n(.*){re.escape(_END)}\n", before, re.DOTALL)
    layout = _ChatML(found.group(1), found.group(2)) if found else _ChatML(before, None)
    for probe in _PROBES:
        try:
            expected = render(probe)
        except Exception as exc:
            raise unsupported from exc
        if layout.render(probe) != expected:
            raise unsupported
    stops = [_END, _START]
    eos = getattr(tokenizer, "eos_token", None)
    if isinstance(eos, str) and eos and eos not in stops:
        stops.append(eos)
    return layout.go_template(), stops


def modelfile(gguf_file: str, tokenizer) -> str:
    """An Ollama Modelfile for `gguf_file` (expected beside it): FROM, TEMPLATE, stop strings, temperature 0."""
    template, stops = ollama_template(tokenizer)
    if '"""' in template:
        raise DocbotError('the chat template contains """, which a Modelfile TEMPLATE cannot quote')
    for stop in stops:
        if '"' in stop or not stop.strip():
            raise DocbotError(f"the stop string {stop!r} cannot be written in a Modelfile")
    lines = [f"FROM ./{Path(gguf_file).name}", f'TEMPLATE """{template}"""']
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    lines += ["PARAMETER temperature 0", ""]
    return "\n".join(lines)


def export_for_ollama(merged_dir: str, out_dir: str, name: str = "model", **kwargs) -> Path:
    """`out_dir/<name>.f16.gguf` and `out_dir/Modelfile`, ready for `ollama create NAME -f out_dir/Modelfile`.

    `out_dir` must not exist yet; it is assembled under a temporary name and renamed when complete.
    """
    from transformers import AutoTokenizer

    out = Path(out_dir)
    if out.exists():
        raise DocbotError(f"{out} already exists; an export is never overwritten: choose a new folder")
    text = modelfile(f"{name}.f16.gguf", AutoTokenizer.from_pretrained(merged_dir))  # fails fast, before converting
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        export_gguf(merged_dir, str(staging / f"{name}.f16.gguf"), **kwargs)
        (staging / "Modelfile").write_text(text, encoding="utf-8")
        staging.chmod(0o755)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------- Ollama: create by API


def ollama_create(client, name: str, gguf_file: str, template: str, stop: list[str]) -> None:
    """Create model `name` on the Ollama server behind `client` (an `ollama.Client`) from a GGUF file.

    Uploads the file as a blob (`create_blob`), then `create(model=name, files={file name: digest},
    template=..., parameters={"stop": ..., "temperature": 0})`, the API form of the Modelfile above.
    """
    import ollama

    from .providers.ollama import translated_errors

    host = str(client._client.base_url).rstrip("/")
    path = Path(gguf_file)
    if not path.is_file():
        raise DocbotError(f"{path} does not exist; export the model first (docbot.export.export_gguf)")
    with translated_errors(host, name):  # an unreachable or slow server, as for any request
        try:
            digest = client.create_blob(path)
            status = None
            for progress in client.create(model=name, files={path.name: digest}, template=template,
                                          parameters={"stop": list(stop), "temperature": 0}, stream=True):
                status = progress.status
        except ollama.ResponseError as exc:
            raise ProviderError(f"the Ollama server at {host} refused to create {name!r}: {exc.error}; check "
                                f"that it is recent enough to import GGUF files (ollama >= 0.5) and has disk "
                                f"space, or create it by hand with `ollama create {name} -f Modelfile`") from exc
    if status != "success":
        raise ProviderError(f"the Ollama server at {host} did not finish creating {name!r} (last status: "
                            f"{status!r}); check its log and try again")
