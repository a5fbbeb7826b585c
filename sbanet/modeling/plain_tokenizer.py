"""A BERT WordPiece tokenizer read straight from ``tokenizer.json`` with the ``tokenizers``
package (the Rust library transformers' fast tokenizers wrap), for inference start-up: the same
token ids as transformers' ``BertTokenizerFast`` on that file, without importing transformers.

:func:`load_plain_tokenizer` returns None for a directory it cannot serve exactly (no
``tokenizer.json`` / ``tokenizer_config.json``, or a tokenizer class other than BERT's); the
caller then loads transformers' tokenizer.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import torch

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
BERT_CLASSES = {"BertTokenizer", "BertTokenizerFast"}


class PlainTokenizer:
    """``tokenizer.json``'s tokenizer with the calls sbanet makes of a transformers tokenizer:
    :meth:`encode` (what :func:`sbanet.modeling.text_encoder.tokenize` calls),
    :meth:`convert_ids_to_tokens`, :meth:`get_vocab`, :attr:`pad_token_id` and
    :meth:`save_pretrained` (a directory transformers' ``AutoTokenizer`` reads back).

    Thread-safe: the truncation and padding settings of one call are set and used under a lock.
    """

    def __init__(self, backend: Any, config: dict[str, Any]) -> None:
        self._backend = backend
        self._config = dict(config)
        self._lock = threading.Lock()
        pad = self._config.get("pad_token", "[PAD]")
        pad_id = backend.token_to_id(pad)
        if pad_id is None:
            raise ValueError(f"the tokenizer's pad token {pad!r} is not in its vocabulary")
        self.pad_token, self.pad_token_id = pad, pad_id

    def encode(self, texts: list[str], max_tokens: int, pad_to_max: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> ``input_ids [B, L]``, ``attention_mask [B, L]`` (int64) with [CLS] ... [SEP],
        truncated to ``max_tokens``; ``L`` is ``max_tokens`` (``pad_to_max``) or the longest text's."""
        with self._lock:
            self._backend.enable_truncation(max_tokens, stride=0, strategy="longest_first", direction="right")
            self._backend.enable_padding(
                direction="right",
                pad_id=self.pad_token_id,
                pad_type_id=0,
                pad_token=self.pad_token,
                length=max_tokens if pad_to_max else None,
            )
            encodings = self._backend.encode_batch(list(texts), add_special_tokens=True)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return ids, mask

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        """Token ids -> their vocabulary strings (word pieces, ``[CLS]`` / ``[SEP]`` included)."""
        return [self._backend.id_to_token(int(i)) for i in ids]

    def get_vocab(self) -> dict[str, int]:
        """Token string -> id, added (special) tokens included."""
        return self._backend.get_vocab(with_added_tokens=True)

    def save_pretrained(self, directory: str | Path) -> tuple[str, ...]:
        """Write ``tokenizer.json`` (without per-call truncation or padding) and
        ``tokenizer_config.json``; returns the files written."""
        from tokenizers import Tokenizer

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            backend = Tokenizer.from_str(self._backend.to_str())
        backend.no_truncation()
        backend.no_padding()
        files = (directory / TOKENIZER_FILE, directory / TOKENIZER_CONFIG_FILE)
        backend.save(str(files[0]))
        files[1].write_text(json.dumps(self._config, indent=2))
        return tuple(str(f) for f in files)


def load_plain_tokenizer(directory: str | Path) -> PlainTokenizer | None:
    """The plain tokenizer of a local directory, or None when it holds no ``tokenizer.json`` and
    ``tokenizer_config.json`` of a BERT tokenizer (transformers' tokenizer is then the way)."""
    directory = Path(directory)
    if not (directory / TOKENIZER_FILE).is_file() or not (directory / TOKENIZER_CONFIG_FILE).is_file():
        return None
    config = json.loads((directory / TOKENIZER_CONFIG_FILE).read_text())
    if config.get("tokenizer_class") not in BERT_CLASSES:
        return None
    from tokenizers import Tokenizer

    return PlainTokenizer(Tokenizer.from_file(str(directory / TOKENIZER_FILE)), config)
