"""Context that answers: the retrieved blocks cut down to their sentences nearest the question.

On a CPU the prompt's tokens are what cost time before the first word (prefill), so the context is the sentences
of the top blocks nearest the question, within one character budget for all blocks together, each kept in its
block and in its order: the best sentences of several blocks answer about as well as one whole block, in a shorter
prompt. Nearest means the embedding's cosine plus a share of the question's rare words (`WORDS_WEIGHT`), the
sentence-level twin of hybrid search.

The answer prompt and the training prompts select alike (`datasets.to_row` calls the same function), so a
fine-tuned model sees at training time what it sees when it answers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from .text import content_stems, split_sentences

__all__ = ["nearness", "select_context", "Embed", "WORDS_WEIGHT"]

Embed = Callable[[list[str]], np.ndarray]  # texts -> unit-length rows (an `Embedder.embed`)
# Weight of the question's rare words shared by a sentence, added to the cosine: MiniLM alone can rank a sentence
# that shares the question's common words above the one that holds its distinguishing word.
WORDS_WEIGHT = 0.5
_LIST = re.compile(r"^[^\n]*\S:[ \t]*\n(?:[ \t]*(?:[-*•]|\d{1,2}[.)])[ \t]+\S[^\n]*(?:\n|$))+", re.M)


def select_context(question: str, blocks: Sequence[tuple[str, str]], budget: int,
                   embed: Embed) -> list[tuple[str, str]]:
    """The (label, text) blocks cut to the sentences most similar to `question`, in at most `budget` characters
    in all (at least the best sentence); a block left with no sentence is dropped. Blocks are returned whole when
    they fit or `budget` is 0."""
    if budget <= 0 or sum(len(text) for _, text in blocks) <= budget:
        return list(blocks)
    sentences = _distinct([(b, s) for b, (_, text) in enumerate(blocks) for s in _units(text)])
    if not sentences:
        return list(blocks)
    similarity = nearness(question, [s for _, s in sentences], embed)
    kept, used = [], 0
    for i in np.argsort(-similarity, kind="stable"):
        length = len(sentences[i][1]) + 1
        if used + length > budget and kept:
            continue
        kept.append(int(i))
        used += length
    chosen = sorted(kept)
    return [(label, "\n".join(sentences[i][1] for i in chosen if sentences[i][0] == b))
            for b, (label, _) in enumerate(blocks) if any(sentences[i][0] == b for i in chosen)]


def nearness(question: str, sentences: list[str], embed: Embed) -> np.ndarray:
    """How near each sentence is to `question`: the embedding's cosine plus `WORDS_WEIGHT` times the share of the
    question's words it holds, each weighted by its rarity among `sentences`."""
    vectors = embed([question] + sentences)
    return vectors[1:] @ vectors[0] + WORDS_WEIGHT * _shared_words(question, sentences)


def _units(text: str) -> list[str]:
    """The sentences of `text`, except that a list (a lead-in line ending in ":" and its item lines) is one unit,
    its lines kept: a list answer needs every item, not the few nearest the question."""
    units, at = [], 0
    for match in _LIST.finditer(text):
        units += split_sentences(text[at:match.start()])
        units.append("\n".join(" ".join(line.split()) for line in match.group().strip().splitlines()))
        at = match.end()
    return units + split_sentences(text[at:])


def _distinct(sentences: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The sentences less those repeated inside another: neighbouring chunks overlap, so the next block starts
    with the end of the one before, often cut mid-sentence."""
    texts = [s.lower() for _, s in sentences]
    return [sentences[i] for i, t in enumerate(texts)
            if not any(j != i and t in other and (t != other or j < i) for j, other in enumerate(texts))]


def _shared_words(question: str, sentences: list[str]) -> np.ndarray:
    """Per sentence, the share of the question's words it holds, each word weighted by its rarity among the
    sentences (log(1 + n/df)): "children" counts for more than "records" in a block about records."""
    words = [content_stems(s) for s in sentences]
    weight = {w: math.log(1 + len(sentences) / df)
              for w in content_stems(question) if (df := sum(w in s for s in words))}
    total = sum(weight.values()) or 1.0
    return np.array([sum(v for w, v in weight.items() if w in s) / total for s in words], dtype=np.float32)
