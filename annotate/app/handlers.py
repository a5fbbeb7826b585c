"""Handlers of the Segment and Attention tabs: short functions over a backend.

Each handler checks its input; a ``ValueError`` (bad input, explained) becomes a readable
refusal via :func:`annotate.app.guards.user_errors`: one log line, no traceback, no server path in
the text. API clients get it as an error; the page gets it through
:func:`annotate.app.guards.on_page` as a warning toast, and every output keeps what it showed (a
refused click never wipes the previous result). Per-user data lives in the
:class:`annotate.app.results.SegmentSession` kept in a ``gr.State``, never in module globals; the
result's details and summary are written by :mod:`annotate.app.results`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr
import numpy as np

from annotate.app.guards import (
    annotator,
    refusal,
    uploaded_path,
    user_errors,
)
from annotate.app.results import SegmentSession, result_details, summary_markdown
from sbanet.inference.confidence import NOTHING_FOUND, ConfidenceThresholds, judge
from sbanet.inference.lexicon import not_taught_message, taught_classes, untaught_subject

from ..store.text import code_text, markdown_text
from . import attention_view as views
from .inputs import DecodedUploads, LoadedImage, parse_bands, parse_expressions, resize_mask
from .render import fit_within, palette_colour, probability_image
from .scale import choose_scale

DISPLAY_SIDE = 1600  # overlays are sent to the browser at most this large; downloads are full size
OVERLAY_ALPHA = 0.6
FOLLOW_UP_PATIENCE_S = 3.0  # the longest follow-up work waits for other users' model runs
DRAWN_ATTENTION_KEPT = 8  # attention picture sets kept for reopening the tab (~5 MB each)


class ModelFirst:
    """Model runs before follow-up work: ``slots`` model runs at a time, and the work that comes
    after an overlay (store write, probability maps, mask files, attention pictures) waits while
    any model run is running or waiting for a slot.

    On a 2-core CPU a model run beside another user's follow-up work takes two to five times as
    long (docs/benchmarks.md, "Four users at once"); the follow-up work, which nobody is looking
    at yet, goes after the overlays the others are waiting for. It waits ``patience`` seconds at
    most, so a steady stream of clicks delays it but never starves it.
    """

    def __init__(self, slots: int = 1, patience: float = FOLLOW_UP_PATIENCE_S) -> None:
        if slots < 1:
            raise ValueError(f"model_slots must be at least 1, got {slots}")
        self._slots = threading.BoundedSemaphore(slots)
        self._busy = threading.Condition()
        self._in_line = 0  # model runs running or waiting for a slot
        self.patience = patience

    @contextmanager
    def model_run(self) -> Iterator[None]:
        """Hold one of the slots for a model run (waiting for one in line)."""
        with self._busy:
            self._in_line += 1
        try:
            with self._slots:
                yield
        finally:
            with self._busy:
                self._in_line -= 1
                self._busy.notify_all()

    def follow_up(self) -> bool:
        """Wait until no model run is running or in line (at most ``patience`` s); False when
        the wait ran out."""
        with self._busy:
            return self._busy.wait_for(lambda: self._in_line == 0, timeout=self.patience)


class SegmentHandlers:
    """Segment (upload, expressions -> overlays) and Attention (what the model looked at).

    A segmentation comes in two steps so the overlay shows as soon as the model is done:
    :meth:`run_model` (model, verdicts, overlay) and :meth:`finish` (store write, probability
    maps, mask files); :meth:`segment` does both in one call (the API). Only the model run holds
    one of the ``model_slots``: users wait for each other's model runs, never for the rest, and
    the rest waits for the model runs (:class:`ModelFirst`).
    """

    def __init__(self, backend: Any, model_slots: int = 1, thresholds: ConfidenceThresholds | None = None) -> None:
        self.backend = backend
        self.models = ModelFirst(model_slots)
        self._thresholds = thresholds
        self.uploads = DecodedUploads()  # the preview's decode serves the clicks on the same upload
        self._drawn: OrderedDict[tuple[int, str | None, bool], tuple[Any, tuple]] = OrderedDict()
        self._drawn_lock = threading.Lock()

    @property
    def thresholds(self) -> ConfidenceThresholds:
        """The given thresholds, else those of the model in use (its checkpoint's metadata, else
        :mod:`sbanet.inference.confidence`'s defaults): read per call, as the model can be swapped."""
        if self._thresholds is not None:
            return self._thresholds
        return ConfidenceThresholds.from_metadata(getattr(self.backend, "model_metadata", None))

    @property
    def taught(self) -> dict[str, tuple[str, ...]]:
        """The classes and wordings the model in use was taught (its checkpoint's metadata;
        ``{}`` when it does not say): the Segment tab's chips, the "not trained on" notes."""
        return taught_classes(getattr(self.backend, "model_metadata", None))

    def untaught_notes(self, expressions: list[str]) -> list[str | None]:
        """For each expression, "this model was not trained on <words>; it knows ..." when none of
        its content words was taught, else None."""
        taught = self.taught
        subjects = [untaught_subject(e, taught) for e in expressions]
        return [None if s is None else not_taught_message(s, taught) for s in subjects]

    def predict(
        self, image: np.ndarray, expressions: list[str], threshold: float = 0.5, gsd: tuple[float, float] | None = None
    ) -> tuple[list[Any], Any]:
        """The backend's model run, one of ``model_slots`` at a time (``gsd``: resampled to the
        model's training GSD, :mod:`annotate.app.scale`)."""
        with self.models.model_run():
            if gsd is None:
                return self.backend.predict(image, expressions, threshold)
            return self.backend.predict(image, expressions, threshold, gsd=gsd)

    def preview(self, file: Any, bands_text: str) -> tuple[np.ndarray | None, str]:
        """Show an upload as the model will see it (TIFFs stretched per band), with its facts; a
        file that cannot be used says why right under the upload."""
        if file is None:  # the upload was cleared
            return None, ""
        try:
            image = self.uploads.load(uploaded_path(file), parse_bands(bands_text))
            self.uploads.display_png(image, DISPLAY_SIDE)  # the overlays of this upload's clicks
        except ValueError as exc:
            return None, f"⚠ {markdown_text(refusal(exc, 'preview'))}"
        return fit_within(image.rgb, DISPLAY_SIDE), describe(image)

    @user_errors
    def run_model(
        self,
        file: Any,
        expressions_text: str,
        bands_text: str,
        threshold: float,
        previous: SegmentSession | None = None,
        gsd_text: str | None = None,
    ) -> tuple[Any, str, SegmentSession]:
        """Image + expressions -> the overlay, a first summary (with each mask's verdict) and the
        session :meth:`finish` completes. ``previous``: this user's last segmentation (numbers runs);
        ``gsd_text``: the ground sampling distance field (:func:`annotate.app.scale.choose_scale`)."""
        started = time.perf_counter()
        bands = parse_bands(bands_text)
        image = self.uploads.load(uploaded_path(file), bands)
        expressions = parse_expressions(expressions_text)
        scale = choose_scale(image, gsd_text, getattr(self.backend, "training_gsd", None))
        model_started = time.perf_counter()
        predictions, model = self.predict(image.rgb, expressions, float(threshold), scale.gsd)
        predictions = [without_nodata(p, image.valid) for p in predictions]
        model_seconds = time.perf_counter() - model_started
        run = previous.run + 1 if previous is not None else 1
        verdicts = [judge(p, self.thresholds) for p in predictions]
        unsaved: list[int | None] = [None] * len(predictions)
        session = SegmentSession(
            image, bands, predictions, unsaved, run, verdicts, model,
            expression_ids=list(unsaved), untaught=self.untaught_notes([p.expression for p in predictions]),
            scale=_scale_note(scale.note, predictions),
        )  # fmt: skip
        overlay = overlay_value(predictions, self.uploads.display_png(image, DISPLAY_SIDE))
        session.seconds = {"model": model_seconds, "overlay": time.perf_counter() - started}
        return overlay, summary_markdown(result_details(session)), session

    @user_errors
    def finish(
        self,
        session: SegmentSession | None,
        annotator_name: str,
        keep_untrusted: bool = False,
        request: gr.Request = None,
    ) -> tuple[list[tuple[np.ndarray, str]], list[str], str, dict[str, Any], SegmentSession]:
        """Save the drafts (not "nothing found" ones unless ``keep_untrusted``), draw the
        probability maps and write the full-size mask files of :meth:`run_model`'s session."""
        if session is None:
            raise ValueError("segment an image first")
        if session.saved:  # the model step was refused and left the last (finished) result: keep it
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        started = time.perf_counter()
        self.models.follow_up()  # other users' overlays first
        predictions, image = session.predictions, session.image
        keep = [i for i, v in enumerate(session.verdicts) if keep_untrusted or v.label != NOTHING_FOUND]
        ids: list[int | None] = [None] * len(predictions)
        expression_ids: list[int | None] = [None] * len(predictions)
        image_id = None
        if keep:
            author = annotator(request, annotator_name)
            recorded = self.backend.record_segmentation(image, [predictions[i] for i in keep], session.model, author)
            image_id = recorded.image_id
            for i, version, expression_id in zip(keep, recorded.mask_version_ids, recorded.expression_ids):
                ids[i], expression_ids[i] = version, expression_id
        display = fit_within(image.rgb, DISPLAY_SIDE)
        size = display.shape[:2]
        gallery = [
            (probability_image(display, _resize_probability(p.probability, size)), f"P({p.expression})")
            for p in predictions
        ]
        files = self.backend.downloads.mask_files(
            image.name.rsplit(".", 1)[0], [(p.expression, p.mask) for p in predictions], image.geo, session.model.name
        )
        seconds = dict(session.seconds, total=session.seconds["overlay"] + time.perf_counter() - started)
        done = dataclasses.replace(
            session, mask_version_ids=ids, seconds=seconds, saved=True, expression_ids=expression_ids
        )
        details = result_details(done, image_id)
        return gallery, files, summary_markdown(details), details, done

    def segment(
        self,
        file: Any,
        expressions_text: str,
        bands_text: str,
        threshold: float,
        annotator_name: str,
        previous: SegmentSession | None = None,
        keep_untrusted: bool = False,
        gsd_text: str | None = None,
        request: gr.Request = None,
    ) -> tuple[Any, list[tuple[np.ndarray, str]], list[str], str, dict[str, Any], SegmentSession]:
        """Both steps in one call: overlay, probability maps, full-size mask PNGs, summary, details."""
        annotator(request, annotator_name)  # every input is checked before the model runs
        overlay, _, session = self.run_model(file, expressions_text, bands_text, threshold, previous, gsd_text)
        gallery, files, summary, details, session = self.finish(session, annotator_name, keep_untrusted, request)
        return overlay, gallery, files, summary, details, session

    # --- attention ---------------------------------------------------------------------------
    def attention_choices(self, session: SegmentSession | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The expression and word dropdowns after a segmentation (first expression, first word)."""
        if session is None:
            return gr.update(choices=[], value=None), gr.update(choices=[], value=None)
        first = session.predictions[0]
        words = views.word_choices(first.attention)
        return (
            gr.update(choices=[p.expression for p in session.predictions], value=first.expression),
            gr.update(choices=words, value=_content_word(words)),
        )

    def word_choices(self, session: SegmentSession | None, expression: str | None) -> dict[str, Any]:
        if session is None:
            return gr.update(choices=[], value=None)
        words = views.word_choices(session.prediction(expression).attention)
        return gr.update(choices=words, value=_content_word(words))

    @user_errors
    def render_attention(
        self, session: SegmentSession | None, expression: str | None, word: str | None, shared: bool = False
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Query-token maps, word bars, the pixel-word map of ``word`` and TCSA, for one
        expression (``shared``: one colour scale across the stages of a panel)."""
        if session is None:
            raise ValueError("segment an image first: the attention maps belong to a segmentation")
        maps = session.prediction(expression).attention
        key = (id(maps), word, bool(shared))
        with self._drawn_lock:  # the same pictures again (the tab reopened): no redraw
            kept = self._drawn.get(key)
            if kept is not None and kept[0] is maps:  # the maps themselves, not a reuse of their id
                self._drawn.move_to_end(key)
                return kept[1]
        self.models.follow_up()  # four matplotlib figures: 0.5-0.9 s of CPU, after other users' overlays
        pictures = attention_pictures(session.image.rgb, maps, word, shared)
        with self._drawn_lock:
            self._drawn[key] = (maps, pictures)  # holding the maps keeps their id from being reused
            while len(self._drawn) > DRAWN_ATTENTION_KEPT:
                self._drawn.popitem(last=False)
        return pictures

    def attention_if_shown(
        self, session: SegmentSession | None, expression: str | None, word: str | None, shared: bool, shown: bool
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """After a segmentation: :meth:`render_attention` when the Attention tab is open (``shown``),
        else no pictures (the old ones belong to the last result); opening the tab draws them."""
        if not shown or session is None:
            return None, None, None, None
        return self.render_attention(session, expression, word, shared)

    @user_errors
    def attention_for(
        self, file: Any, expression: str, word: str, bands_text: str
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """API: the four attention pictures for one image and expression (nothing is stored)."""
        image = self.uploads.load(uploaded_path(file), parse_bands(bands_text))
        expressions = parse_expressions(expression, max_count=1)
        prediction = self.predict(image.rgb, expressions)[0][0]
        return attention_pictures(image.rgb, prediction.attention, word)


# --- helpers ----------------------------------------------------------------------------------
def attention_pictures(
    rgb: np.ndarray, maps: Any, word: str | None, shared: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """The four attention views of one prediction; an unknown word falls back to the first content word."""
    if maps is None:
        raise ValueError("this segmentation was run without attention maps")
    words = views.word_choices(maps)
    word = word if word in words else _content_word(words)
    return (
        views.query_attention_image(rgb, maps, shared),
        views.word_relevance_image(maps),
        views.pixel_word_image(rgb, maps, word, shared) if word else None,
        views.tcsa_image(rgb, maps),
    )


STOP_WORDS = frozenset({"the", "a", "an", "of", "in", "on", "at", "to", "and", "with", "is", "are", "all"})


def _content_word(words: list[str]) -> str | None:
    """The first word that is not a stop word (the one a user most likely wants to inspect)."""
    for word in words:
        if word.split(" (")[0].lower() not in STOP_WORDS:
            return word
    return words[0] if words else None


def _scale_note(note: str, predictions: list[Any]) -> str:
    """The field's choice, and how the predictor resampled (its predictions' ``scale``) if it did."""
    done = getattr(predictions[0], "scale", None) if predictions else None
    return note if done is None else f"{note}; {done}"


def without_nodata(prediction: Any, valid: np.ndarray | None) -> Any:
    """A prediction whose mask and probability are 0 at nodata (``valid`` False); as is without any."""
    if valid is None:
        return prediction
    probability = np.where(valid, prediction.probability, 0).astype(np.float32)
    return dataclasses.replace(prediction, mask=prediction.mask & valid, probability=probability)


def _resize_probability(probability: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if probability.shape == tuple(size):
        return probability
    from PIL import Image

    return np.asarray(Image.fromarray(probability).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def size_of(image: LoadedImage) -> tuple[int, int]:
    return image.rgb.shape[0], image.rgb.shape[1]


def describe(image: LoadedImage) -> str:
    height, width = size_of(image)
    stretched = (
        "" if image.dtype == "uint8" and image.band_count in (1, 3, 4) else ", shown with a 2-98 % stretch per band"
    )
    return f"{code_text(image.name)} · {width}×{height} px · {image.band_count} band(s) · {image.dtype}{stretched}"


def overlay_value(predictions: list[Any], display: tuple[str, tuple[int, int]]) -> Any:
    """The Segment tab's overlay: the image (at most :data:`DISPLAY_SIDE`) with one coloured,
    labelled mask per expression (mask values set the alpha: 0.6 keeps the image visible).
    ``display``: that image already encoded (:meth:`DecodedUploads.display_png`: path,
    ``(height, width)``), so the click does not encode it again."""
    path, size = display
    labels = [(resize_mask(p.mask, size) * OVERLAY_ALPHA, p.expression) for p in predictions]
    colours = {p.expression: palette_colour(i) for i, p in enumerate(predictions)}
    return gr.AnnotatedImage(value=(path, labels), color_map=colours)


def add_expression(current: str | None, wording: str) -> str:
    """The expression box after a click on a "What can I ask?" chip: ``wording`` on a line of its
    own after what is there (not twice)."""
    lines = [line for line in (current or "").splitlines() if line.strip()]
    if wording not in (line.strip() for line in lines):
        lines.append(wording)
    return "\n".join(lines)
