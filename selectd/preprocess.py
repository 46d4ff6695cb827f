"""Named text preprocessing profiles.

A model must see text prepared exactly as its training data was; the profile names below are what
model manifests and scorer options refer to. Each function is the reference implementation's own
expression (see the comments), so changing one changes what a deployed model sees.
"""
from __future__ import annotations

from typing import Callable


def identity(text: str) -> str:
    return text


def preselect(text: str) -> str:
    # PreSelect's released inference (datatrove FastTextClassifierFilter): newlines deleted.
    return text.strip().replace("\n", "")


def dclm(text: str) -> str:
    # DCLM: Python splitlines() also splits on \r, \v, \f, \x1c-\x1e, \x85, \u2028, \u2029.
    return " ".join(text.strip().splitlines())


def dolma_jigsaw(text: str) -> str:
    # Dolma's jigsaw / nsfw fastText taggers.
    return text.replace("\n", " ").strip()


def newline_to_space(text: str) -> str:
    # fastText's Python predict() rejects "\n"; language ID replaces it by a space.
    return text.replace("\n", " ")


PROFILES: dict[str, Callable[[str], str]] = {
    "identity": identity,
    "preselect": preselect,
    "dclm": dclm,
    "dolma_jigsaw": dolma_jigsaw,
    "lid": newline_to_space,
}


def profile(name: str) -> Callable[[str], str]:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown preprocessing profile {name!r}; known: {', '.join(sorted(PROFILES))}"
        ) from None
