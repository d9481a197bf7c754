"""The Ollama side of an export: the Modelfile (TEMPLATE, stop strings) and creating the model through the API.

    export_for_ollama(merged, out_dir)                       # model.f16.gguf + Modelfile
    ollama_create(None, "medical-bot", gguf, *ollama_template(tokenizer))

The Ollama TEMPLATE is the most fragile part of an export: a template that differs from the one the model was
trained with by one newline silently degrades every answer. `ollama_template` therefore does not translate Jinja;
it recognises the ChatML layout (`<|im_start|>role\\ncontent<|im_end|>\\n`, used by SmolLM2, Qwen and docbot's tiny
test model), including a default system message the Jinja template inserts when none is given, and then checks
the Go template's output against the tokenizer's own `apply_chat_template` on several conversations; any
difference is refused with an error rather than exported.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DocbotError, ProviderError
from ..providers.ollama import server_url, translated_errors
from .export import export_gguf

__all__ = ["export_for_ollama", "modelfile", "ollama_create", "ollama_template"]


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


def ollama_create(host: str | None, name: str, gguf_file: str, template: str, stop: list[str],
                  timeout: float = 300.0) -> None:
    """Create model `name` on the Ollama server at `host` (None: $OLLAMA_HOST or Ollama's default) from a GGUF file.

    Uploads the file as a blob (`create_blob`), then `create(model=name, files={file name: digest},
    template=..., parameters={"stop": ..., "temperature": 0})`, the API form of the Modelfile above.
    """
    import ollama

    host = server_url(host)
    client = ollama.Client(host=host, timeout=timeout)
    path = Path(gguf_file)
    if not path.is_file():
        raise DocbotError(f"{path} does not exist; export the model first (docbot.tuning.export.export_gguf)")
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
