"""Export a fine-tuned model: merge the LoRA adapter into its base and convert that to an f16 GGUF with llama.cpp's
own converter (the Ollama side, Modelfile and create, is `ollama_export`).

    merged = merge_adapter(base_location, adapter_dir, "models/medical_merged")
    gguf = export_gguf(merged, "models/medical.f16.gguf")

The converter is `convert_hf_to_gguf.py` from the llama.cpp sources vendored in the `llama-cpp-python` source
distribution (nothing is compiled). It is downloaded once with pip into `$DOCBOT_CACHE/llama.cpp-<version>`
(default `~/.cache/docbot/llama.cpp-<version>`) and run in a subprocess with this interpreter.
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
from pathlib import Path

from ..files import write_json_atomic
from ..errors import DocbotError
from .registry import base_fingerprint
from .training import ADAPTER_MANIFEST

__all__ = ["LLAMA_CPP_PYTHON_VERSION", "MERGED_MANIFEST", "converter_dir", "ensure_converter", "export_gguf",
           "merge_adapter"]

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
                          f"(docbot.tuning.export.merge_adapter)")
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
