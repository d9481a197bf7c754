"""Export a fine-tuned model: merge the LoRA adapter into its base and convert that to an f16 GGUF with llama.cpp's
own converter (the Ollama side, Modelfile and create, is `ollama_export`), or convert the adapter alone to a GGUF
LoRA that llama.cpp applies over the quantized base (what the registry keeps beside every adapter).

    merged = merge_adapter(base_location, adapter_dir, "models/medical_merged")
    gguf = export_gguf(merged, "models/medical.f16.gguf")
    lora = export_lora_gguf(adapter_dir, base_location, "models/medical.lora.gguf")

The converters are `convert_hf_to_gguf.py` and `convert_lora_to_gguf.py` from the llama.cpp sources vendored in the
`llama-cpp-python` source distribution (nothing is compiled). They are downloaded once with pip into
`$DOCBOT_CACHE/llama.cpp-<version>` (default `~/.cache/docbot/llama.cpp-<version>`) and run in a subprocess with
this interpreter: they import their own `gguf-py`, which must not replace the `gguf` package transformers uses here.
"""

from __future__ import annotations

import json
import logging
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

from ..files import cache_dir as user_cache_dir, write_json_atomic
from ..errors import DocbotError
from .registry import base_fingerprints
from .training import ADAPTER_MANIFEST

__all__ = ["LLAMA_CPP_PYTHON_VERSION", "MERGED_MANIFEST", "CONVERTERS", "converter_dir", "ensure_converter",
           "export_gguf", "export_lora_gguf", "merge_adapter"]

log = logging.getLogger("docbot")

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
MERGED_MANIFEST = "docbot_merged.json"
CONVERTERS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py")  # a whole model; a LoRA adapter alone


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
        recorded = base_fingerprints(base)  # recorded at conversion for a packaged base, else hashed now
    except FileNotFoundError:
        return
    if expected not in recorded:
        trained_on = (manifest.get("base_model") or {}).get("name") or "another base model"
        raise DocbotError(f"the adapter was trained on {trained_on} (fingerprint {expected[:12]}), but "
                          f"{base_location} has fingerprint {recorded[0][:12]}; merge it into the base it was "
                          f"trained on")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------- GGUF export


def converter_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the unpacked converter lives: `<cache>/llama.cpp-<version>`."""
    return Path(cache_dir or user_cache_dir()) / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


def _download_command(dest: str) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", dest]


def ensure_converter(cache_dir: str | os.PathLike | None = None) -> Path:
    """The llama.cpp folder holding the `CONVERTERS`, `conversion/` and `gguf-py/`; downloaded once.

    The `llama-cpp-python` source distribution (~77 MB) vendors llama.cpp; only the converters' files are kept
    (~2 MB). The download runs pip, so it follows the machine's pip configuration (index, proxy). A cache made
    before the LoRA converter was kept gets the missing script from the same pinned version, each file renamed
    into place whole.
    """
    target = converter_dir(cache_dir)
    if all((target / name).is_file() for name in CONVERTERS):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        command = _download_command(str(staging / "sdist"))
        log.warning("downloading llama.cpp's GGUF converter once (llama-cpp-python %s source, ~77 MB) into %s",
                    LLAMA_CPP_PYTHON_VERSION, target)
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
        if (target / CONVERTERS[0]).is_file():  # an older cache of the same version: add what it lacks
            for name in CONVERTERS:
                if not (target / name).is_file():
                    os.replace(unpacked / name, target / name)
            return target
        try:
            unpacked.rename(target)
        except OSError:  # another process finished first: use its copy
            if not (target / CONVERTERS[0]).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _extract_converter(archive: Path, dest: Path) -> None:
    """Unpack only `vendor/llama.cpp/{the CONVERTERS, conversion/, gguf-py/, LICENSE}` into `dest`."""
    wanted = (*CONVERTERS, "LICENSE", "conversion/", "gguf-py/")
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            _, sep, rel = member.name.partition("/vendor/llama.cpp/")
            if sep and (rel in wanted or rel.startswith(wanted[-2:])) and (member.isfile() or member.isdir()):
                member.name = rel
                members.append(member)
        tar.extractall(dest, members=members, filter="data")
    missing = [name for name in CONVERTERS if not (dest / name).is_file()]
    if missing:
        raise DocbotError(f"{archive.name} holds no vendor/llama.cpp/{missing[0]}; "
                          f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} was expected")


def export_gguf(merged_dir: str, out_file: str, *, llama_cpp_dir: str | None = None,
                cache_dir: str | None = None) -> Path:
    """Convert a merged model folder to an f16 GGUF with llama.cpp's `convert_hf_to_gguf.py`.

    `llama_cpp_dir`: an existing llama.cpp checkout to use instead of the cached download. The GGUF is written
    under a temporary name beside `out_file` and renamed when the converter succeeded; an existing `out_file` is
    never overwritten. The GGUF carries the tokenizer and its chat template.
    """
    merged = Path(merged_dir)
    if not (merged / "config.json").is_file():
        raise DocbotError(f"{merged} is not a model folder (no config.json); merge the adapter first "
                          f"(docbot.tuning.export.merge_adapter)")
    return _convert("convert_hf_to_gguf.py", [str(merged), "--outtype", "f16"], merged, out_file,
                    llama_cpp_dir, cache_dir)


def export_lora_gguf(adapter_dir: str | Path, base_location: str | Path, out_file: str | Path, *,
                     outtype: str = "f32", llama_cpp_dir: str | None = None, cache_dir: str | None = None) -> Path:
    """Convert a PEFT LoRA adapter to a GGUF LoRA with llama.cpp's `convert_lora_to_gguf.py`, for llama.cpp to
    apply over the (quantized) GGUF of the same base model.

    `base_location`: the base model's local folder (the converter reads its config to name the tensors; the
    weights are not read). `outtype` "f32" keeps the trained weights exactly (the adapter is a few MB either way;
    "f16" measured the same agreement on SmolLM2). Written and renamed like `export_gguf`; never overwrites.
    """
    adapter, base = Path(adapter_dir), Path(base_location)
    if not (adapter / "adapter_config.json").is_file():
        raise DocbotError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    if not (base / "config.json").is_file():
        raise DocbotError(f"{base_location} is not a local model folder (no config.json); the LoRA converter "
                          f"needs the base model's folder (docbot.providers.resolve_base_model)")
    return _convert("convert_lora_to_gguf.py", [str(adapter), "--base", str(base), "--outtype", outtype], adapter,
                    out_file, llama_cpp_dir, cache_dir)


def _convert(script_name: str, args: list[str], source: Path, out_file: str | Path, llama_cpp_dir: str | None,
             cache_dir: str | None) -> Path:
    """Run one of llama.cpp's converters in a subprocess into a temp file beside `out_file`; rename it into place
    only when the converter succeeded and wrote a GGUF."""
    out = Path(out_file)
    if out.exists():
        raise DocbotError(f"{out} already exists; a GGUF export is never overwritten: choose a new file name")
    llama_cpp = Path(llama_cpp_dir) if llama_cpp_dir else ensure_converter(cache_dir)
    script = llama_cpp / script_name
    if not script.is_file():
        raise DocbotError(f"{llama_cpp} holds no {script_name}; pass a llama.cpp checkout")

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
        done = subprocess.run([sys.executable, str(script), *args, "--outfile", str(tmp)],
                              check=False, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            hint = ""
            missing = re.search(r"No module named '([\w.]+)'", done.stderr or "")
            if missing:
                hint = f" (install it: `pip install {missing.group(1).split('.')[0]}`)"
            raise DocbotError(f"llama.cpp's converter failed on {source}{hint}:\n{_tail(done.stderr, 15)}")
        with open(tmp, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise DocbotError(f"llama.cpp's converter wrote no GGUF for {source}:\n{_tail(done.stderr, 15)}")
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
