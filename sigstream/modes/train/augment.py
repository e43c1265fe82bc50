"""Perturbed copies of training texts for the distillation transfer set (Tang et al. 2019, "Distilling
Task-Specific Knowledge from BERT into Simple Neural Networks").

A student learns a teacher's function better from more points than the labelled ones. The shared data has few
in-domain unlabelled sentences of FPB's kind, so each labelled training text also yields a few variants: some words
deleted, or a contiguous span of it. A deletion can flip a sentence's sentiment ("did not fall"), which is why a
variant carries only the teacher's soft label, never its source's hard one. Word-level, so the same text reaches a
teacher and a student with different tokenizers.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

DELETE_P = 0.15  # each word's chance to go in a deletion variant
MIN_WORDS = 4  # shorter texts yield no variant: too little is left to mean anything


def perturbed(text: str, rng: random.Random) -> str:
    """One variant of ``text``: each word deleted with ``DELETE_P`` (half the time), or a random contiguous span
    of 60% or more of its words. At least three words are kept."""
    words = text.split()
    if rng.random() < 0.5:
        kept = [w for w in words if rng.random() >= DELETE_P]
        if len(kept) < 3:
            kept = words[:3]
        return " ".join(kept)
    length = rng.randint(max(3, -(-len(words) * 6 // 10)), len(words))
    start = rng.randint(0, len(words) - length)
    return " ".join(words[start : start + length])


def augmented_texts(texts: Iterable[str], copies: int, seed: int) -> Iterator[str]:
    """Up to ``copies`` distinct variants of each text (of ``MIN_WORDS`` words or more), none equal to its source,
    in the order of ``texts``; the same (texts, copies, seed) always give the same variants."""
    rng = random.Random(f"augment:{seed}")
    for text in texts:
        if copies <= 0 or len(text.split()) < MIN_WORDS:
            continue
        seen = {" ".join(text.split())}
        for _ in range(copies * 3):  # a short text may repeat a variant; a few more draws, never a loop
            variant = perturbed(text, rng)
            if variant not in seen:
                seen.add(variant)
                yield variant
            if len(seen) > copies:
                break
