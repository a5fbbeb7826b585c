"""The fit configuration: one YAML file plus ``key=value`` overrides with dotted keys.

Sections: ``model`` (preset, pretrained, ablation, config overrides, initial weights), ``data``
(dataset kind/root/splits, reader options, the text-blind baseline), ``train``
(:class:`sbanet.training.engine.TrainConfig`) and ``output`` (run folder and logging). Unknown keys are
errors that list the known ones; values are parsed as YAML (``train.lr=1e-4``,
``model.overrides.num_queries=[64,64,32,32]``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sbanet.build import ABLATIONS, PRESETS
from sbanet.data.rescale import check_scale_range
from sbanet.inference.precision import precision_from_env
from sbanet.training.engine import TrainConfig

DATASET_KINDS = ("rrsisd", "refsegrs", "folder", "synthetic")
FREE_FORM = {("model", "overrides"), ("data", "options"), ("data", "val_options")}  # dicts checked by their consumers
MIX_KEYS = ("kind", "root", "split", "options", "limit")  # an entry of data.mix
# keys older run configs used -> today's: ``train.amp`` (none / bf16 / fp16) is ``train.precision``
RENAMED_KEYS = {"train.amp": "train.precision"}


@dataclass
class ModelSection:
    preset: str = "sbanet_swin_b"
    pretrained: bool = True  # the encoders' pretrained weights (ImageNet / BERT)
    ablation: str | None = None  # a key of sbanet.build.ABLATIONS
    overrides: dict[str, Any] = field(default_factory=dict)  # SBANetConfig fields
    init: str | None = None  # start from a checkpoint's weights (directory, or a trusted .pt)
    # a staged recipe in one command: the recipe (YAML) whose run's best/ gives the initial weights,
    # trained first while that run has no best/ yet; it sets init (train.fit.train_init_recipe)
    init_recipe: str | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"model.preset {self.preset!r} is not one of {sorted(PRESETS)}")
        if self.ablation is not None and self.ablation not in ABLATIONS:
            raise ValueError(f"model.ablation {self.ablation!r} is not one of {sorted(ABLATIONS)}")


@dataclass
class DataSection:
    kind: str = "rrsisd"
    root: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"  # model selection split; never the test split
    options: dict[str, Any] = field(default_factory=dict)  # reader options (synthetic: n_images...)
    val_options: dict[str, Any] = field(default_factory=dict)  # replace options for the val split
    blind_text: bool = False  # replace every expression with "" (the text-blind baseline)
    augment: bool = False  # training items flipped / turned, direction words with them (sbanet.data.augment)
    photometric: bool = False  # training items' colour, exposure, blur, JPEG changed (sbanet.data.photometric)
    # [low, high]: class-level training items seen closer / farther by a factor in it (sbanet.data.rescale)
    scale: list[float] | None = None
    limit_train: int | None = None  # keep the first N samples (smoke runs)
    limit_val: int | None = None
    # more training sources, concatenated with the main one (val stays the main one's):
    # [{kind, root, split (default: train_split), options, limit}], e.g. synthetic scenes
    mix: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in DATASET_KINDS:
            raise ValueError(f"data.kind {self.kind!r} is not one of {DATASET_KINDS}")
        if self.val_split == "test":
            raise ValueError("data.val_split must not be 'test': select models on val, report on test")
        check_scale_range(self.scale)
        if not isinstance(self.mix, list):
            raise ValueError(f"data.mix must be a list of {{kind, root, options, ...}} mappings, got {self.mix!r}")
        for n, entry in enumerate(self.mix):
            if not isinstance(entry, dict) or entry.get("kind") not in DATASET_KINDS:
                raise ValueError(f"data.mix[{n}] needs a kind, one of {DATASET_KINDS}; got {entry!r}")
            unknown = sorted(set(entry) - set(MIX_KEYS))
            if unknown:
                raise ValueError(f"data.mix[{n}] has unknown keys {unknown}; known: {list(MIX_KEYS)}")
            if entry.get("split") == "test":
                raise ValueError(f"data.mix[{n}]: never train on a test split")


@dataclass
class OutputSection:
    dir: str = "runs/default"
    log_every: int = 10  # optimiser steps between CSV/TensorBoard rows
    tensorboard: bool = True
    plots: bool = True
    progress_bar: bool = True


@dataclass
class FitConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputSection = field(default_factory=OutputSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"model": ModelSection, "data": DataSection, "train": TrainConfig, "output": OutputSection}


def parse_value(text: str) -> Any:
    """A command-line value as YAML: numbers, booleans, null, lists; anything else a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def coerce(section: str, f: dataclasses.Field, value: Any) -> Any:
    """Numbers for numeric fields (YAML 1.1 reads ``1e-4`` as a string), or ``ValueError``."""
    kind = str(f.type).split("|")[0].strip()
    if value is None or kind not in ("int", "float", "bool"):
        return value
    try:
        if kind == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
        number = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
        if number is None:
            raise TypeError
        if kind == "int":
            if number != int(number):
                raise TypeError
            return int(number)
        return number
    except (TypeError, ValueError):
        raise ValueError(f"{section}.{f.name} must be {kind}, got {value!r}") from None


def apply_override(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``key = "a.b.c"``, checking the names against the schema."""
    parts = RENAMED_KEYS.get(key, key).split(".")
    if parts[0] not in SECTIONS:
        raise ValueError(f"unknown config key {key!r}: it must start with one of {sorted(SECTIONS)}")
    if len(parts) < 2:
        raise ValueError(f"config key {key!r} needs a field, e.g. {parts[0]}.<field>")
    known = {f.name for f in dataclasses.fields(SECTIONS[parts[0]])}
    if parts[1] not in known:
        raise ValueError(f"unknown config key {key!r}; {parts[0]} has {sorted(known)}")
    if len(parts) > 2 and tuple(parts[:2]) not in FREE_FORM:
        raise ValueError(f"config key {key!r} is too deep: {parts[0]}.{parts[1]} is not a mapping")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def build_config(tree: dict[str, Any]) -> FitConfig:
    """Validate a nested dict (YAML) into a :class:`FitConfig`; missing keys take the defaults."""
    if not isinstance(tree, dict):
        raise ValueError("a fit config must be a mapping with sections model/data/train/output")
    unknown = sorted(set(tree) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown config sections {unknown}; known: {sorted(SECTIONS)}")
    sections = {}
    for name, cls in SECTIONS.items():
        values = tree.get(name) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(values) - known)
        if bad:
            raise ValueError(f"unknown keys {bad} in section {name!r}; known: {sorted(known)}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        sections[name] = cls(**{k: coerce(name, fields[k], v) for k, v in values.items()})
    return FitConfig(**sections)


def load_config(path: str | Path | None, overrides: list[str] = (), base: dict[str, Any] | None = None) -> FitConfig:
    """``base`` (e.g. a resumed run's config), then the YAML file, then ``key=value`` overrides.

    ``$SBANET_PRECISION`` (:func:`sbanet.inference.precision.precision_from_env`), when set, is
    the default of ``train.precision``: ``base``, the file and the overrides decide over it."""
    tree: dict[str, Any] = dataclasses.asdict(build_config(base)) if base else {}
    env = precision_from_env("")
    if env:
        tree.setdefault("train", {}).setdefault("precision", env)
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a fit config must be a YAML mapping")
        for old, new in RENAMED_KEYS.items():
            section, _, name = old.partition(".")
            if isinstance(loaded.get(section), dict) and name in loaded[section]:
                loaded[section][new.partition(".")[2]] = loaded[section].pop(name)
        for section, values in loaded.items():
            if isinstance(values, dict) and isinstance(tree.get(section), dict):
                tree[section].update(values)
            else:
                tree[section] = values
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like section.key=value")
        apply_override(tree, key.strip(), parse_value(text))
    return build_config(tree)


def split_cli_overrides(argv: list[str]) -> list[str]:
    """``["--train.lr", "1e-4", "--model.preset=sbanet_tiny", "data.kind=synthetic"]`` ->
    ``["train.lr=1e-4", "model.preset=sbanet_tiny", "data.kind=synthetic"]``."""
    out, i = [], 0
    while i < len(argv):
        item = argv[i]
        if item.startswith("--") and "." in item.split("=", 1)[0]:
            if "=" in item:
                out.append(item[2:])
            elif i + 1 < len(argv):
                out.append(f"{item[2:]}={argv[i + 1]}")
                i += 1
            else:
                raise ValueError(f"{item} needs a value")
        elif "=" in item and not item.startswith("-"):
            out.append(item)
        else:
            raise ValueError(f"unrecognised argument {item!r} (overrides look like section.key=value)")
        i += 1
    return out
