"""The tune pipeline: an indexed domain -> question/answer records -> formats -> notebook or local training ->
registry -> export -> evaluation.

`qa_generation` writes question/answer pairs, `judge` drops the unfit ones, `datasets` formats and splits them, `notebook` (with `notebook_cells`)
builds the Colab notebook, `training` trains a LoRA adapter (self-contained: the notebook embeds its source),
`registry` versions adapters, `finetuned` resolves, checks and loads them, `export` and `ollama_export` make a
GGUF and an Ollama model, and `evaluation` (with `heldout`, `scoring` and `report`) measures whether it helped.
This layer imports `rag/`, `providers/`, `config`, `errors` and `files`; it reaches a bot only through the
`evaluation.Asker` protocol, never the facade or the REPL.
"""

__all__: list[str] = []
