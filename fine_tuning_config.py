"""Your settings, as the guide says: edit a value here and docbot uses it the next time it starts.

docbot reads this file; it does not import it. Only assignments of plain values belong here (numbers, strings,
True/False, tuples of strings): each NAME is a field of `docbot.config.Config` in upper case, where the defaults
and the reasons for them live. A name you delete falls back to that default; an unknown name, a wrong type or an
expression is refused with an error naming this file and the line. docbot looks for this file in `$DOCBOT_CONFIG`,
then in the working folder, then beside the script you ran; the chatbot's first line says which file it read.
Per-object overrides come on top: `ConfigurableDocBot(top_k=5)`, `bot.train(learning_rate=1e-4)`.
"""

# --- Training parameters ---------------------------------------------------------------------------------------
LEARNING_RATE = 2e-4  # LoRA adapters train well at 1e-4..3e-4; the guide's 5e-5 suits full fine-tuning
BATCH_SIZE = 4  # fits the 0.5B default on a laptop CPU and a T4 in Colab
NUM_EPOCHS = 3  # the guide's advice: start with 2-3 epochs, watch validation loss

# --- Model configuration -----------------------------------------------------------------------------------------
BASE_MODEL = "Qwen2.5-Coder-0.5B-Instruct"  # the answer model, offline; "SmolLM2-135M-Instruct" trains ~2x faster
LORA_RANK = 8  # r=8 on q/v trains ~0.1% of Qwen-0.5B's weights; any HF folder or hub id also works as BASE_MODEL
LORA_ALPHA = 16  # 2 x rank, the usual scaling
LORA_DROPOUT = 0.05  # light regularisation for small datasets
LORA_TARGET_MODULES = ("q_proj", "v_proj")  # attention projections of Llama-style models (SmolLM2, Qwen, Llama)
MAX_SEQ_LENGTH = 1024  # a cap per training example, not a size: batches pad to their longest example

# --- Data processing ---------------------------------------------------------------------------------------------
CHUNK_SIZE = 1000  # characters per chunk: about 250 tokens, a paragraph or two of context
CHUNK_OVERLAP = 100  # characters shared by neighbouring chunks, so a sentence cut at a border is not lost
MAX_TRAINING_EXAMPLES = 1000  # cap per dataset; a seeded shuffle picks which examples stay

# --- Retrieval and answering -------------------------------------------------------------------------------------
TOP_K = 3  # blocks searched for the context's sentences (measured on the dev questions: see docbot/config.py)
CONTEXT_CHARS = 600  # characters of context in all, the sentences nearest the question (0: whole blocks)
RELEVANCE_THRESHOLD = 0.25  # cosine similarity below which no retrieved chunk counts as relevant
HYBRID_SEARCH = True  # BM25 fused with vectors (RRF): dev hit@1 0.933 vs 0.900, MRR@3 0.961 vs 0.928
EMBEDDING_MODEL = "all-MiniLM-L6-v2"  # the bundled offline embedder; a sentence-transformers folder also works
PROVIDER = "auto"  # "auto": Ollama when its server has OLLAMA_MODEL, else llama.cpp, else transformers
ANSWER_MODEL = "Qwen2.5-Coder-0.5B-Instruct"  # the model that answers (llama.cpp); "SmolLM2-135M-Instruct" is faster
# "Qwen2.5-Coder-1.5B-Instruct" answers better (dev 85/110 against 77/110) in about twice the time; install it
# with `bash scripts/setup.sh --larger-model` (1.1 GB)
OLLAMA_MODEL = "qwen2.5-coder:0.5b"  # model name on the Ollama server (`ollama pull qwen2.5-coder:0.5b`)
N_THREADS = 0  # llama.cpp threads; 0 = the cores this process may use
MAX_NEW_TOKENS = 200  # answer length cap; greedy decoding runs ~30 tokens/s for the 135M model on 2 cores
HISTORY_TURNS = 2  # earlier turns kept; a follow-up is asked after the last one (its blocks and answer)

# --- Folders (relative to the working directory) ----------------------------------------------------------------
DOCUMENTS_DIR = "./Documents"  # one sub-folder per domain
INDEX_DIR = "./index"  # the Chroma store, one collection per domain
MODELS_DIR = "./models"  # converted base models and versioned fine-tuned adapters
DATA_DIR = "./fine_tuning_data"  # generated training data, one stamped set per run

# --- Shared index (a team's Chroma server) -------------------------------------------------------------------------
CHROMA_HOST = ""  # "" = the local store in INDEX_DIR; a host name = that Chroma server ($CHROMA_HOST also sets it)
CHROMA_PORT = 0  # 0 = $CHROMA_PORT, else Chroma's default 8000; the token is only ever read from $CHROMA_TOKEN
LOCK_TIMEOUT = 30.0  # seconds a write waits for another process's write; then the index is read as it stands
