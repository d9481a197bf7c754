"""The ask pipeline: documents -> chunks -> embeddings -> index (Chroma) -> retrieval -> prompt -> answer.

`documents` reads files page by page, `chunking` splits pages, `embeddings` embeds chunks, `store` opens Chroma
(a folder or a team's server) with its write lease, `index` keeps one collection per domain in step with its
folder, `retrieval` fuses vector and keyword search, `judge` scores whether a block answers a question,
`prompts` builds the model's messages, `guards` watch the model's stream, `conversation` holds a chat's turns,
and `answers` is the one answer path.
This layer imports `providers/`, `config`, `errors` and `files`, never `tuning/`, the facade or the REPL.
"""

__all__: list[str] = []
