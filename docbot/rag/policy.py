"""The answer path's rules and their thresholds, in one place. Each rule is a named unit in `answers`; each can be
switched off (None or False) so that `benchmarks/ablation.py` measures what it is worth. The
measurements behind each value are in docs/answers.md."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

__all__ = ["AnswerPolicy"]


@dataclass(frozen=True)
class AnswerPolicy:
    """Which rules decide an answer, with their thresholds (MiniLM cosines, or `context.nearness` where said)."""

    # a question naming what the domain never mentions is declined before the model is asked
    unknown_terms: bool = True
    # a block below the relevance threshold still counts when one of its sentences is this near the question
    sentence_relevance: float | None = 0.6
    # a first sentence with less than this weighted share of its content words in the blocks is declined
    decline_below: float | None = 0.35
    # the block sentence a first sentence rests on must be this near the question, else it is declined
    answer_relevance: float | None = 0.56
    # a block sentence this near the question (nearness) is shown in place of a declined first sentence
    answers_itself: float | None = 1.35
    # a first sentence resting on a sentence this much less near (nearness) than the best one gives way to it
    swap_margin: float | None = 0.1
    # a first sentence of at most this many words is shown as the block sentence that holds its words
    fragment_words: int | None = 6

    def without(self, *rules: str) -> AnswerPolicy:
        """This policy with `rules` (field names) switched off."""
        unknown = set(rules) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"no such rule: {', '.join(sorted(unknown))}; rules: {', '.join(self.rules())}")
        return replace(self, **{r: False if isinstance(getattr(self, r), bool) else None for r in rules})

    @classmethod
    def rules(cls) -> list[str]:
        """Every rule's name, in the order the answer path applies them."""
        return [f.name for f in fields(cls)]
