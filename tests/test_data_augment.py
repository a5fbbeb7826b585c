"""Flips and quarter turns of nadir imagery turn the expression's direction words with the image."""

import numpy as np
import pytest
import torch

from sbanet.data import ReferringDataset, ReferringSample
from sbanet.data.augment import TRANSFORMS, turn_side, turn_tensor, turn_words

CORNERS = {(0, 0): "top left", (0, 2): "top right", (2, 0): "bottom left", (2, 2): "bottom right"}


@pytest.mark.parametrize(("flip", "turns"), TRANSFORMS)
def test_corner_words_follow_the_pixels(flip, turns):
    for (row, col), words in CORNERS.items():
        x = torch.zeros(3, 3)
        x[row, col] = 1
        moved = tuple(int(v) for v in (turn_tensor(x, flip, turns) == 1).nonzero()[0])
        assert turn_words(f"the building in the {words}", flip, turns) == f"the building in the {CORNERS[moved]}"


@pytest.mark.parametrize(("flip", "turns"), TRANSFORMS)
def test_sides_extremes_and_halves_follow_the_pixels(flip, turns):
    # a marker in the middle of each side: where it lands names the side's new word
    where = {"N": (0, 1), "S": (2, 1), "W": (1, 0), "E": (1, 2)}
    names = {v: k for k, v in where.items()}
    words = {"N": "top", "S": "bottom", "W": "left", "E": "right"}
    phrases = {"N": "at the top", "S": "at the bottom", "W": "on the left", "E": "on the right"}
    for side, (row, col) in where.items():
        x = torch.zeros(3, 3)
        x[row, col] = 1
        landed = names[tuple(int(v) for v in (turn_tensor(x, flip, turns) == 1).nonzero()[0])]
        assert turn_side(side, flip, turns) == landed
        assert turn_words(f"the {words[side]}most road", flip, turns) == f"the {words[landed]}most road"
        assert turn_words(f"all buildings in the {words[side]} half", flip, turns) == (
            f"all buildings in the {words[landed]} half"
        )
        assert turn_words(f"the water {phrases[side]} of the image", flip, turns) == (
            f"the water {phrases[landed]} of the image"
        )


def test_words_without_directions_and_the_identity_are_kept():
    assert turn_words("the largest water body", True, 3) == "the largest water body"
    assert turn_words("The building in the Upper Left corner", False, 0) == "The building in the Upper Left corner"
    assert turn_words("the building in the upper left corner", True, 0) == "the building in the top right corner"
    assert turn_words("the road in the middle", False, 1) == "the road in the middle"


class _Tokenizer:
    """Word-level ids (enough to tell expressions apart) with the tokenizer's call signature."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        words = [[self.vocab.setdefault(w, len(self.vocab) + 3) for w in t.split()][: max_length - 2] for t in texts]
        rows = [[1, *row, 2] for row in words]
        ids = torch.zeros(len(rows), max_length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def _sample(expression: str, image: np.ndarray, mask: np.ndarray) -> ReferringSample:
    return ReferringSample("s", "img", expression, "train", lambda: image, lambda: mask)


def test_dataset_turns_image_mask_and_words_together():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:4, :4] = 255  # a white square in the top left ...
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True  # ... is the referent
    sample = _sample("the building in the top left", image, mask)
    tokenizer = _Tokenizer()
    plain = ReferringDataset([sample], 8, tokenizer, max_tokens=12)
    assert plain[0]["mask"].tolist() == torch.from_numpy(mask).long().tolist()
    data = ReferringDataset([sample], 8, tokenizer, max_tokens=12, augment=True)
    assert torch.equal(data.input_ids, plain.input_ids)  # as written: the first transform
    seen = set()
    torch.manual_seed(0)
    for _ in range(64):
        item = data[0]
        corner = tuple(int(v) // 4 * 2 for v in item["mask"].nonzero()[0])  # (0|2, 0|2) of the square
        words = CORNERS[corner]
        expected = ReferringDataset([_sample(f"the building in the {words}", image, mask)], 8, tokenizer, 12)
        assert torch.equal(item["input_ids"], expected.input_ids[0])
        assert torch.equal(item["image"][0] > item["image"][0].mean(), item["mask"].bool())  # image turned as the mask
        seen.add(corner)
    assert len(seen) == 4
