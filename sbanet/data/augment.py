"""Flips and 90-degree rotations for nadir imagery, with the expression's directions turned too.

An aerial image seen from straight above has no "up": a flipped or rotated tile is another valid
tile. The paper (as LAVT) trains without flips, because an expression names positions ("the
building on the left") and a flipped image makes that label wrong. Here the words turn with the
image: under a horizontal flip "left" and "right" swap; under a quarter turn counter-clockwise
what was at the top is on the left. The eight transforms of the square (the dihedral group D4)
are ``(flip, turns)``: first an optional horizontal flip, then ``turns`` quarter turns
counter-clockwise (``torch.rot90`` on the last two axes).

Directions are the four sides ``N E S W`` of the image; :func:`turn_words` rewrites the phrases
the expression generator and people use ("in the top left", "at the bottom", "on the right side",
"the leftmost ...", "in the left half", "upper", "lower") and keeps corner phrases in English
order (vertical word first: "the bottom left", never "the left bottom").
"""

from __future__ import annotations

import re

import torch

TRANSFORMS: tuple[tuple[bool, int], ...] = tuple((flip, turns) for flip in (False, True) for turns in range(4))

SIDES = "NESW"  # clockwise: one quarter turn counter-clockwise moves each side one step back
WORD_SIDE = {"top": "N", "right": "E", "bottom": "S", "left": "W"}
SIDE_WORD = {side: word for word, side in WORD_SIDE.items()}
# a side said on its own: "at the top", "on the left"
SIDE_PHRASE = {"N": "at the top", "S": "at the bottom", "W": "on the left", "E": "on the right"}
PHRASE_SIDE = {phrase: side for side, phrase in SIDE_PHRASE.items()}

_WORD = r"(top|bottom|left|right)"
_PATTERN = re.compile(
    r"\b(?P<phrase>at the top|at the bottom|on the left|on the right)\b"
    r"|\b(?P<corner_a>top|bottom|left|right) (?P<corner_b>top|bottom|left|right)\b"
    r"|\b(?P<extreme>" + _WORD[1:-1] + r")most\b"
    r"|\b(?P<word>" + _WORD[1:-1] + r")\b",
    re.IGNORECASE,
)
_UPPER_LOWER = re.compile(r"\b(upper|lower)\b", re.IGNORECASE)


def turn_side(side: str, flip: bool, turns: int) -> str:
    """Where side ``side`` (``N E S W``) of an image ends up after the transform ``(flip, turns)``."""
    if flip and side in "EW":
        side = "W" if side == "E" else "E"
    return SIDES[(SIDES.index(side) - turns) % 4]


def turn_words(expression: str, flip: bool, turns: int) -> str:
    """``expression`` as it reads on the image transformed by ``(flip, turns)``.

    >>> turn_words("the building in the top left", False, 1)
    'the building in the bottom left'
    >>> turn_words("the leftmost road", True, 0)
    'the rightmost road'
    """
    if not flip and turns % 4 == 0:
        return expression
    text = _UPPER_LOWER.sub(lambda m: "top" if m.group(1).lower() == "upper" else "bottom", expression)

    def word(side: str) -> str:
        return SIDE_WORD[turn_side(side, flip, turns)]

    def replace(match: re.Match[str]) -> str:
        if match.group("phrase"):
            return SIDE_PHRASE[turn_side(PHRASE_SIDE[match.group("phrase").lower()], flip, turns)]
        if match.group("corner_a"):
            a = word(WORD_SIDE[match.group("corner_a").lower()])
            b = word(WORD_SIDE[match.group("corner_b").lower()])
            vertical_first = a in ("top", "bottom")
            return f"{a} {b}" if vertical_first else f"{b} {a}"
        if match.group("extreme"):
            return word(WORD_SIDE[match.group("extreme").lower()]) + "most"
        return word(WORD_SIDE[match.group("word").lower()])

    return _PATTERN.sub(replace, text)


def turn_tensor(x: torch.Tensor, flip: bool, turns: int) -> torch.Tensor:
    """``[..., H, W]`` transformed by ``(flip, turns)`` (a horizontal flip, then quarter turns
    counter-clockwise), as :func:`turn_words` turns the words."""
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, turns % 4, dims=(-2, -1)) if turns % 4 else x
