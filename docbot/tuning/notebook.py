"""The Colab notebook that fine-tunes the base model on a dataset bundle (a zip of chat JSONL files + card).

The notebook is self-contained: it never imports docbot. Its training code is the source of
`docbot/tuning/training.py` and its base-model conversion is the source of `docbot.providers.base_models.convert_gguf`, both
embedded with `inspect.getsource` when the notebook is built, so Colab runs exactly the code the library runs.
Run anywhere else (locally, or by nbclient in the tests) it installs nothing and reads `DATA_PATH` instead of
asking for an upload.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from . import notebook_cells as cells
from . import training
from ..providers import Provider, base_models
from ..rag.index import StoredChunk
from ..rag.retrieval import Source
from .datasets import prepare_dataset
from ..files import write_bytes_atomic
from ..config import Config
from ..errors import ConfigError

__all__ = ["build_notebook", "write_notebook", "base_model_source", "prepare_data_and_notebook", "NOTEBOOK_OVERRIDES",
           "ADAPTER_ZIP"]

ADAPTER_ZIP = "rag_chatbot_fine_tuned.zip"  # unpacks to rag_chatbot_fine_tuned/, the folder the guide loads
OUTPUT_DIR = "rag_chatbot_fine_tuned"

# Config fields the notebook uses, with the parameter names they get there; plus max_steps and data_path.
_PARAMETERS = {
    "base_model": "BASE_MODEL", "learning_rate": "LEARNING_RATE", "batch_size": "BATCH_SIZE",
    "num_epochs": "NUM_EPOCHS", "lora_rank": "LORA_RANK", "lora_alpha": "LORA_ALPHA",
    "lora_dropout": "LORA_DROPOUT", "lora_target_modules": "LORA_TARGET_MODULES",
    "max_seq_length": "MAX_SEQ_LENGTH",
}
NOTEBOOK_OVERRIDES = tuple(_PARAMETERS) + ("max_steps", "data_path")

# What the notebook pip-installs in Colab when the installed version differs: the versions this notebook was
# built (and tested) with, since the embedded training code follows their APIs.
_COLAB_PACKAGES = ("transformers", "trl", "peft", "datasets", "accelerate")


def base_model_source(name: str, models_dir: str | Path) -> dict:
    """How the notebook obtains the base model `name`, in the form `build_notebook(base_model=...)` takes.

    A packaged model (converted into `models_dir` first if needed) gives its pip packages and the SHA-256 of its
    GGUF, the base's identity (the de-quantized bytes may differ between transformers versions, the GGUF cannot);
    an existing folder gives its path; anything else is taken as a Hugging Face hub id.
    """
    spec = base_models.PACKAGED_MODELS.get(name)
    if spec is not None:
        folder = Path(base_models.resolve_base_model(name, models_dir))
        converted = json.loads((folder / base_models.MANIFEST_NAME).read_text(encoding="utf-8"))
        return {"kind": "packaged", "name": spec.name, "gguf_file": spec.gguf_file, "size": spec.size,
                "gguf_sha256": converted["gguf_sha256"],
                "parts": [{"distribution": part.distribution, "version": part.version, "package": part.package,
                           "path": part.path, "sha256": part.sha256} for part in spec.parts]}
    if Path(name).is_dir():
        return {"kind": "local", "name": name, "path": str(Path(name).resolve())}
    return {"kind": "hub", "name": name, "revision": "main"}


def prepare_data_and_notebook(chunks: Sequence[StoredChunk], *, domain: str, config: Config, provider: Provider,
                              retrieve: Callable[[str], list[Source]], generator: str = "auto",
                              notebook_overrides: dict | None = None, **dataset_options) -> dict[str, str]:
    """Training data from a domain's chunks (`datasets.prepare_dataset`) and the notebook that trains on it, kept
    beside the data and as `./fine_tuning_colab.ipynb` (the latest). Returns the written files by role.

    `generator="auto"` asks the model for pairs when it is an Ollama model and derives them from the text itself
    for the embedded 135M model (too small to write reliable JSON).
    """
    if generator == "auto":
        generator = "llm" if provider.name == "ollama" else "rules"
    paths = prepare_dataset(chunks, domain=domain, config=config, generator=generator,
                            provider=provider if generator == "llm" else None, retrieve=retrieve, **dataset_options)
    bundle = Path(paths["bundle"])
    notebook = build_notebook(config, bundle_name=bundle.name,
                              base_model=base_model_source(config.base_model, config.models_dir),
                              overrides=notebook_overrides)
    kept = bundle.with_name(bundle.name.replace("bundle_", "fine_tuning_colab_").replace(".zip", ".ipynb"))
    write_notebook(notebook, kept)
    latest = Path(config.data_dir).parent / "fine_tuning_colab.ipynb"
    write_notebook(notebook, latest)
    return {**paths, "notebook": str(kept), "colab_notebook": str(latest)}


def build_notebook(config: Config, *, bundle_name: str, base_model: dict,
                   overrides: dict | None = None) -> nbformat.NotebookNode:
    """The fine-tuning notebook for the dataset bundle `bundle_name`, with `config`'s training parameters.

    `overrides` may change any of `NOTEBOOK_OVERRIDES` (the config's training fields, `max_steps`, `data_path`);
    anything else is a ConfigError naming it. `base_model` is a dict from `base_model_source` (kinds "packaged",
    "hub", "local").
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(NOTEBOOK_OVERRIDES))
    if unknown:
        raise ConfigError(f"unknown notebook override(s) {', '.join(unknown)}; known: "
                          f"{', '.join(NOTEBOOK_OVERRIDES)}")
    max_steps = overrides.pop("max_steps", -1)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps == 0 or max_steps < -1:
        raise ConfigError(f"notebook override max_steps must be a positive int or -1, got {max_steps!r}")
    data_path = str(overrides.pop("data_path", bundle_name))
    config = config.replace(**overrides)
    source = _check_base_model(base_model)

    values = {param: getattr(config, field) for field, param in _PARAMETERS.items()}
    values["LORA_TARGET_MODULES"] = list(values["LORA_TARGET_MODULES"])
    values.update(MAX_STEPS=max_steps, DATA_PATH=data_path, OUTPUT_DIR=OUTPUT_DIR)
    packages = _COLAB_PACKAGES + (("gguf",) if source["kind"] == "packaged" else ())
    versions = {name: _version(name) for name in packages}

    nb = new_notebook(cells=[
        new_markdown_cell(cells.INTRO.format(bundle=bundle_name, base=source["name"], zip=ADAPTER_ZIP)),
        _parameters_cell(values, source),
        new_markdown_cell(cells.INSTALL_MD),
        new_code_cell(cells.INSTALL_CODE.replace("__PINS__", repr(versions))),
        new_markdown_cell(cells.GPU_MD),
        new_code_cell(cells.GPU_CODE),
        new_markdown_cell(cells.TRAINING_CODE_MD),
        new_code_cell(inspect.getsource(training).rstrip() + "\n"),
        new_markdown_cell(cells.DATA_MD),
        new_code_cell(cells.DATA_CODE),
        new_markdown_cell(cells.BASE_MODEL_MD[source["kind"]]),
        new_code_cell(_base_model_code(source)),
        new_markdown_cell(cells.TRAIN_MD),
        new_code_cell(cells.TRAIN_CODE),
        new_markdown_cell(cells.SAVE_MD),
        new_code_cell(cells.SAVE_CODE.replace("__ZIP__", repr(ADAPTER_ZIP)).replace("__FOLDER__", repr(OUTPUT_DIR))),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["accelerator"] = "GPU"  # Colab opens it asking for a GPU runtime
    nb.metadata["colab"] = {"provenance": [], "gpuType": "T4"}
    nbformat.validate(nb)
    return nb


def write_notebook(nb: nbformat.NotebookNode, path: str | Path) -> Path:
    """Validate and write the notebook atomically (a reader never sees half a file)."""
    nbformat.validate(nb)
    path = Path(path)
    write_bytes_atomic(path, nbformat.writes(nb).encode("utf-8"))
    return path


def _check_base_model(source: dict) -> dict:
    kind = source.get("kind")
    needed = {"packaged": ("name", "parts", "gguf_file", "gguf_sha256"),
              "hub": ("name",), "local": ("name", "path")}
    if kind not in needed:
        raise ConfigError(f"base_model kind must be 'packaged', 'hub' or 'local', got {kind!r}")
    missing = [key for key in needed[kind] if not source.get(key)]
    if missing:
        raise ConfigError(f"base_model of kind {kind!r} needs {', '.join(missing)}")
    source = dict(source)
    if kind == "hub":
        source.setdefault("revision", "main")
    return source


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _parameters_cell(values: dict, source: dict) -> nbformat.NotebookNode:
    comments = {
        "BASE_MODEL": "the base model's name (how to obtain it: BASE_MODEL_SOURCE)",
        "MAX_STEPS": "-1: train NUM_EPOCHS epochs; a positive number caps the optimizer steps",
        "DATA_PATH": "the dataset bundle zip, when not in Colab (Colab asks for an upload)",
        "OUTPUT_DIR": "checkpoints and the adapter; zipped to " + ADAPTER_ZIP,
    }
    lines = ["# Parameters (from fine_tuning_config.py when this notebook was made; edit them here)"]
    for name, value in values.items():
        lines.append(f"{name} = {value!r}" + (f"  # {comments[name]}" if name in comments else ""))
    lines.append(f"BASE_MODEL_SOURCE = {source!r}")
    cell = new_code_cell("\n".join(lines) + "\n")
    cell.metadata["tags"] = ["parameters"]  # papermill and Colab forms recognise it
    return cell


def _base_model_code(source: dict) -> str:
    if source["kind"] == "packaged":
        embedded = [textwrap.dedent(inspect.getsource(f)).rstrip()
                    for f in (base_models.join_parts, base_models.convert_gguf)]
        return cells.PACKAGED_CODE.replace("__BASE_MODEL_FUNCTIONS__", "\n\n\n".join(embedded))
    if source["kind"] == "hub":
        return cells.HUB_CODE
    return cells.LOCAL_CODE
