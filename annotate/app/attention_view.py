"""Readable pictures of what SBANet looked at (:class:`sbanet.inference.predictor.AttentionMaps`).

* where the learnable query tokens look at each stage (BAM, Eq. 1), in units of "times uniform"
  so that stages of different resolution share one scale;
* each word's weight in the query-text alignment (Eq. 2), one bar per word and stage;
* PWAM's pixel-word attention of one chosen word, per stage;
* TCSA's spatial attention (Eq. 11) on its patch grid.

Word pieces (``"##ing"``) are merged into the words a user typed; special tokens are shown
greyed out. Figures are drawn with matplotlib's object API (no pyplot global state), so handlers
of concurrent users never share a figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbanet.inference.predictor import AttentionMaps

from .render import fit_within

SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]"})
STAGE_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756")
DISPLAY_SIDE = 320  # the image is drawn at most this large in each panel
DPI = 100


@dataclass(frozen=True)
class Word:
    """A word as typed (its word pieces merged) and the token indices it spans.

    ``key`` is unique within an expression ("the", "the (2)") so a user can pick either "the".
    """

    label: str
    tokens: tuple[int, ...]
    special: bool
    key: str = ""


def merge_word_pieces(tokens: list[str]) -> list[Word]:
    """``["[CLS]", "play", "##ground", "[SEP]"]`` -> words ``[CLS]``, ``playground``, ``[SEP]``."""
    words: list[Word] = []
    for index, token in enumerate(tokens):
        if token.startswith("##") and words and not words[-1].special:
            last = words[-1]
            words[-1] = Word(last.label + token[2:], (*last.tokens, index), False)
        else:
            words.append(Word(token, (index,), token in SPECIAL_TOKENS))
    seen: dict[str, int] = {}
    keyed = []
    for word in words:
        seen[word.label] = seen.get(word.label, 0) + 1
        key = word.label if seen[word.label] == 1 else f"{word.label} ({seen[word.label]})"
        keyed.append(Word(word.label, word.tokens, word.special, key))
    return keyed


def word_choices(attention: AttentionMaps) -> list[str]:
    """The words a user can pick for the pixel-word map (special tokens left out)."""
    return [w.key for w in merge_word_pieces(attention.tokens) if not w.special]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _to_array(figure) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    for text in figure.findobj(Text):  # words typed by users are text, never mathtext ("$...$")
        text.set_parse_math(False)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _message(text: str) -> np.ndarray:
    figure = _figure(6.4, 0.8)
    figure.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#555555")
    return _to_array(figure)


def _heat_panel(
    axes,
    image: np.ndarray,
    heat: np.ndarray,
    title: str,
    label: str,
    interpolation: str = "bilinear",
    scale: tuple[float, float] | None = None,
) -> None:
    """The image in grey with ``heat`` (any grid size, stretched over it) in colour on top.

    The colour scale spans ``scale`` (shared by several panels) or, without it, the map's own
    robust range (1st-99.5th percentile); the colour bar says what the values are, so weak
    structure stays visible without being overstated.
    """
    height, width = image.shape[:2]
    low, high = scale if scale is not None else (float(v) for v in np.percentile(heat, (1.0, 99.5)))
    if high - low < 1e-6:
        low, high = low - 0.5e-6, high + 0.5e-6
    axes.imshow(image.mean(axis=2), cmap="gray", vmin=0, vmax=255, extent=(0, width, height, 0))
    shown = axes.imshow(
        heat, cmap="inferno", vmin=low, vmax=high, alpha=0.6, extent=(0, width, height, 0), interpolation=interpolation
    )
    axes.set_title(title, fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])
    colourbar = axes.figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.02)
    ticks = np.linspace(low, high, 3)
    colourbar.set_ticks(ticks, labels=_tick_labels(ticks))  # plain numbers, never an offset
    colourbar.ax.tick_params(labelsize=7)
    colourbar.set_label(label, fontsize=7)


def _tick_labels(values: np.ndarray) -> list[str]:
    """The fewest significant digits (3 to 7) that tell the values apart (dust shown as 0)."""
    span = float(np.abs(values).max()) or 1.0
    values = np.where(np.abs(values) < 1e-6 * span, 0.0, values)
    for digits in range(3, 8):
        labels = [f"{v:.{digits}g}" for v in values]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def _stage_title(index: int, grid: np.ndarray) -> str:
    return f"stage {index + 1} · 1/{4 * 2**index} · {grid.shape[0]}×{grid.shape[1]}"


def shared_scale(heats: list[np.ndarray]) -> tuple[float, float]:
    """One colour scale for several maps: from 0 to the highest 99.5th percentile among them, so
    a map that is flat (noise around one value) looks flat next to one with structure."""
    high = max(float(np.percentile(h, 99.5)) for h in heats)
    return 0.0, max(high, 1e-6)


def _stage_panels(
    image: np.ndarray,
    maps: list[np.ndarray | None],
    suptitle: str,
    label: str,
    times_uniform: bool,
    shared: bool = False,
):
    shown = fit_within(image, DISPLAY_SIDE)
    available = [(i, m) for i, m in enumerate(maps) if m is not None]
    figure = _figure(3.2 * len(available), 3.3)
    axes = figure.subplots(1, len(available), squeeze=False)[0]
    heats = [grid * grid.size if times_uniform else grid for _, grid in available]
    scale = shared_scale(heats) if shared else None
    for ax, (index, grid), heat in zip(axes, available, heats):
        _heat_panel(ax, shown, heat, _stage_title(index, grid), label, scale=scale)
    figure.suptitle(suptitle, fontsize=11)
    return _to_array(figure)


def query_attention_image(image: np.ndarray, attention: AttentionMaps, shared: bool = False) -> np.ndarray:
    """Where the learnable query tokens look, per stage (BAM, Eq. 1): ``uint8 [h, w, 3]``
    (``shared``: one colour scale for every stage, see :func:`shared_scale`)."""
    if all(q is None for q in attention.query):
        return _message("This model has no learnable query tokens (BAM is off).")
    return _stage_panels(
        image,
        attention.query,
        "Where the model looked, stage by stage (query tokens, BAM Eq. 1)",
        "× an even spread",
        times_uniform=True,
        shared=shared,
    )


def pixel_word_image(image: np.ndarray, attention: AttentionMaps, word: str, shared: bool = False) -> np.ndarray:
    """PWAM's attention of every pixel on ``word`` (word pieces summed), per stage."""
    words = {w.key: w for w in merge_word_pieces(attention.tokens)}
    if word not in words:
        raise ValueError(f"{word!r} is not a word of the expression; choose one of {word_choices(attention)}")
    columns = list(words[word].tokens)
    maps = [m[..., columns].sum(axis=-1) for m in attention.pixel_word]
    return _stage_panels(
        image,
        maps,
        f"Which pixels listened to “{word}” (PWAM: share of each pixel's attention)",
        "share",
        False,
        shared,
    )


def word_relevance_image(attention: AttentionMaps) -> np.ndarray:
    """One bar per word and stage: its share of the query-text alignment (Eq. 2), in %."""
    stages = [(i, r) for i, r in enumerate(attention.word_relevance) if r is not None]
    if not stages:
        return _message("This model has no query-text alignment (BAM is off).")
    words = merge_word_pieces(attention.tokens)
    figure = _figure(max(8.0, 0.75 * len(words) + 1.5), 3.4)
    axes = figure.subplots()
    width = 0.8 / len(stages)
    x = np.arange(len(words))
    for k, (index, relevance) in enumerate(stages):
        heights = np.array([relevance[list(w.tokens)].sum() for w in words]) * 100.0
        bars = axes.bar(x + (k - (len(stages) - 1) / 2) * width, heights, width, label=f"stage {index + 1}")
        for bar, word in zip(bars, words):
            bar.set_color(STAGE_COLOURS[index % len(STAGE_COLOURS)])
            bar.set_alpha(0.35 if word.special else 1.0)
    axes.set_xticks(
        x, [w.label for w in words], rotation=30 if len(words) > 6 else 0, ha="right" if len(words) > 6 else "center"
    )
    for tick, word in zip(axes.get_xticklabels(), words):
        tick.set_color("#999999" if word.special else "#111111")
    axes.set_ylabel("share of alignment (%)")
    axes.set_title("How much each word counted (query-text alignment, BAM Eq. 3)", fontsize=11)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)  # off the bars
    axes.spines[["top", "right"]].set_visible(False)
    return _to_array(figure)


def tcsa_image(image: np.ndarray, attention: AttentionMaps) -> np.ndarray:
    """TCSA's spatial attention (Eq. 11) on its patch grid over the image, with cell values."""
    spatial = attention.tcsa_spatial
    if spatial is None:
        return _message("This model has no TCSA spatial attention.")
    shown = fit_within(image, DISPLAY_SIDE)
    figure = _figure(4.4, 3.9)
    axes = figure.subplots()
    heat = spatial * spatial.size
    title = f"Which regions mattered most · {spatial.shape[0]}×{spatial.shape[1]} patches (TCSA, Eq. 11)"
    _heat_panel(axes, shown, heat, title, "× an even spread", interpolation="nearest")  # one value per patch
    height, width = shown.shape[:2]
    gh, gw = spatial.shape
    if gh * gw <= 100:  # small grids: print each patch's value, white with a dark outline
        from matplotlib import patheffects

        outline = [patheffects.withStroke(linewidth=1.5, foreground="black")]
        for r in range(gh):
            for c in range(gw):
                x, y = (c + 0.5) * width / gw, (r + 0.5) * height / gh
                axes.text(
                    x, y, f"{heat[r, c]:.2f}", ha="center", va="center", fontsize=7, color="white", path_effects=outline
                )
    return _to_array(figure)
