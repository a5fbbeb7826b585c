"""What a segmentation found, as the app shows it: one user's latest result (:class:`SegmentSession`,
kept in a ``gr.State``), the JSON details the app shows and the API returns (:func:`result_details`)
and the Segment tab's summary table (:func:`summary_markdown`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from annotate.app.inputs import LoadedImage
from annotate.app.render import palette_colour
from annotate.store.text import code_text, markdown_text
from sbanet.inference.confidence import Verdict


@dataclass
class SegmentSession:
    """One user's latest segmentation (kept in ``gr.State``).

    ``mask_version_ids`` follows ``predictions``: the draft each was saved as, None where it was
    not saved (nothing found, unless the user asked to keep such results) or not yet saved."""

    image: LoadedImage
    bands: tuple[int, ...] | None
    predictions: list[Any]
    mask_version_ids: list[int | None] = field(default_factory=list)
    run: int = 1  # the how-manieth segmentation of this session
    verdicts: list[Verdict] = field(default_factory=list)
    model: Any = None  # the ModelRef that made the predictions
    seconds: dict[str, float] = field(default_factory=dict)  # "model", "overlay", "total"
    saved: bool = False  # the store write and the downloads are done
    expression_ids: list[int | None] = field(default_factory=list)  # follows predictions, like the ids
    # follows predictions: "this model was not trained on ships; ..." where the model was never
    # taught any word of the expression (sbanet.inference.lexicon.untaught_subject), else None
    untaught: list[str | None] = field(default_factory=list)
    scale: str = ""  # at which scale the image was segmented, and why (annotate.app.scale)

    def prediction(self, expression: str | None) -> Any:
        for prediction in self.predictions:
            if prediction.expression == expression:
                return prediction
        return self.predictions[0]


def result_details(session: SegmentSession, image_id: int | None = None) -> dict[str, Any]:
    """What a segmentation found, as the JSON the app shows and the API returns."""
    image = session.image
    height, width = image.rgb.shape[:2]
    seconds = {key: round(value, 3) for key, value in session.seconds.items()}
    return {
        "image": {
            "name": image.name,
            "sha256": image.sha256,
            "height": height,
            "width": width,
            "bands": image.band_count,
            "dtype": image.dtype,
            "image_id": image_id,
        },
        "model": session.model.name,
        "scale": session.scale,
        "run": session.run,
        "seconds": seconds,
        "saved": session.saved,
        "results": [
            {
                "expression": p.expression,
                "colour": palette_colour(i),
                "area_fraction": round(v.area_fraction, 5),
                "mean_probability_inside": None if v.mean_probability is None else round(v.mean_probability, 4),
                "verdict": v.label,
                "verdict_reason": v.reason,
                "expression_id": expression_id,
                "mask_version": version_id,
                "untaught": untaught,
            }
            for i, (p, v, version_id, expression_id, untaught) in enumerate(
                zip(
                    session.predictions,
                    session.verdicts,
                    session.mask_version_ids,
                    session.expression_ids,
                    session.untaught or [None] * len(session.predictions),
                )
            )
        ],
    }


VERDICT_MARKS = {"found": "found", "low confidence": "⚠ low confidence", "nothing found": "✖ nothing found"}


def summary_markdown(details: dict[str, Any]) -> str:
    """The Segment tab's result text: timing and one line per expression with its colour and
    verdict; while the store write is still running, "saving…" stands for the mask version."""
    info = details["image"]
    seconds = details["seconds"]
    total = seconds.get("total", seconds.get("overlay", 0.0))
    lines = [
        f"Result {details['run']}: **{len(details['results'])} expression(s)** on {code_text(info['name'])} "
        f"({info['width']}×{info['height']}) · "
        f"model {code_text(details['model'])} · **{seconds['model']:.2f} s** model, {total:.2f} s in all",
        "",
    ]
    if details.get("scale"):
        lines[1:1] = ["", markdown_text(details["scale"])]
    headings = {"nothing found": "Nothing found for", "low confidence": "Low confidence for"}
    for result in details["results"]:
        expression = markdown_text(result["expression"])
        if result.get("untaught"):  # said first: it explains the verdict
            lines.append(f"- **'{expression}'**: {markdown_text(result['untaught'])}.")
        elif result["verdict"] in headings:
            lines.append(f"- **{headings[result['verdict']]} '{expression}'**: {result['verdict_reason']}.")
    lines += ["", "| | expression | verdict | area | mean P inside | saved as |", "|---|---|---|---|---|---|"]
    for result in details["results"]:
        inside = "–" if result["mean_probability_inside"] is None else f"{result['mean_probability_inside']:.2f}"
        swatch = f"<span style='color:{result['colour']}'>■</span>"
        if result["mask_version"] is not None:
            saved = f"mask version {result['mask_version']}"
        else:
            saved = "not saved (tick *Save untrusted results*)" if details.get("saved") else "saving…"
        lines.append(
            f"| {swatch} | {markdown_text(result['expression'])} | {VERDICT_MARKS[result['verdict']]} | "
            f"{100 * result['area_fraction']:.1f} % | {inside} | {saved} |"
        )
    return "\n".join(lines)
