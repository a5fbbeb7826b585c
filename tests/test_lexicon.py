"""Expressions the model cannot read (another language, emoji only) are refused, not answered."""

import numpy as np
import pytest
import torch

from sbanet import sbanet_tiny
from sbanet.inference.lexicon import FOREIGN_FUNCTION_WORDS, Lexicon, NotUnderstoodError, converter_phrases
from sbanet.inference.predictor import Predictor
from sbanet.modeling.text_encoder import load_tokenizer

UNDERSTOOD = [
    "the water",
    "all buildings",
    "a purple elephant",  # English: answered (the model may then find nothing)
    "the greenery",  # a trained wording the vocabulary splits into pieces
    "the leftmost building",
    "the rooftops",
    "the ships on the right",
    "The Houses!",
    "the 2 tennis courts",
]
REFUSED = ["das Wasser", "Wasser", "el agua", "die Straße", "les bâtiments", "🌊🌊", "水", "l'eau", "?!", "the watr"]


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    found = Lexicon.for_model(load_tokenizer("minilm"))
    assert found is not None
    return found


@pytest.mark.parametrize("expression", UNDERSTOOD)
def test_english_descriptions_pass_unchanged(lexicon, expression):
    assert lexicon.check(expression) == expression


@pytest.mark.parametrize("expression", REFUSED)
def test_other_languages_and_symbols_are_refused_with_the_reason(lexicon, expression):
    with pytest.raises(NotUnderstoodError, match="the model understands English descriptions") as caught:
        lexicon.check(expression)
    assert isinstance(caught.value, ValueError)  # every caller that reports bad input reports this


def test_every_wording_of_the_converter_is_known(lexicon):
    words = {w for phrase in converter_phrases() for w in phrase.lower().split()}
    assert not [w for w in words if lexicon.unknown_words(w)]
    assert not FOREIGN_FUNCTION_WORDS & lexicon.known


def test_a_tokenizer_without_vocabulary_gives_no_lexicon():
    assert Lexicon.from_tokenizer(object()) is None


def test_the_predictor_refuses_before_running_the_model():
    torch.manual_seed(0)
    predictor = Predictor(sbanet_tiny().eval())
    image = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(NotUnderstoodError, match="'das', 'wasser'"):
        predictor.predict_batch(image, ["the water", "das Wasser"])
    assert predictor.predict(image, "the water").mask.shape == (40, 40)
