"""Whether a result can be trusted: sbanet.inference.confidence, and how the Segment handlers use it."""

from __future__ import annotations

import numpy as np
import pytest
from test_app_handlers import FakeBackend, scene  # noqa: F401  (the fixture)

from annotate.app.handlers import SegmentHandlers
from sbanet.inference.confidence import FOUND, LOW_CONFIDENCE, NOTHING_FOUND, ConfidenceThresholds, judge
from sbanet.inference.predictor import Prediction


def prediction(area: float, inside: float, size: int = 100) -> Prediction:
    mask = np.zeros((size, size), bool)
    mask.flat[: round(area * mask.size)] = True
    probability = np.where(mask, inside, 0.1).astype(np.float32)
    return Prediction("the water", mask, probability)


@pytest.mark.parametrize(
    ("area", "inside", "label"),
    [
        (0.3, 0.9, FOUND),
        (0.3, 0.7, LOW_CONFIDENCE),
        (0.3, 0.55, NOTHING_FOUND),
        (0.001, 0.99, NOTHING_FOUND),
        (0.0, 0.0, NOTHING_FOUND),
    ],
)
def test_verdicts_follow_area_and_mean_probability(area, inside, label):
    verdict = judge(prediction(area, inside))
    assert verdict.label == label
    assert verdict.area_fraction == pytest.approx(area)
    assert verdict.trusted == (label == FOUND) and verdict.reason


def test_thresholds_come_from_checkpoint_metadata_and_are_checked():
    assert ConfidenceThresholds.from_metadata({}) == ConfidenceThresholds()
    custom = ConfidenceThresholds.from_metadata({"confidence": {"min_area_fraction": 0.05}})
    assert custom.min_area_fraction == 0.05 and judge(prediction(0.03, 0.95), custom).label == NOTHING_FOUND
    with pytest.raises(ValueError, match="unknown confidence thresholds"):
        ConfidenceThresholds.from_metadata({"confidence": {"min_area": 0.1}})
    with pytest.raises(ValueError, match="within"):
        ConfidenceThresholds(min_area_fraction=2.0)
    with pytest.raises(ValueError, match="must not exceed"):
        ConfidenceThresholds(min_mean_probability=0.9, confident_mean_probability=0.8)


class SureOfNothingBackend(FakeBackend):
    """Finds the pond, and finds "a purple elephant" nowhere."""

    def predict(self, image, expressions, threshold=0.5):
        predictions, model = super().predict(image, expressions, threshold)
        empty = np.zeros(image.shape[:2], np.float32)
        return [
            p if "elephant" not in p.expression else Prediction(p.expression, empty > 0, empty) for p in predictions
        ], model


def test_nothing_found_is_said_and_not_queued_unless_asked(tmp_path, scene):  # noqa: F811
    backend = SureOfNothingBackend(tmp_path)
    handlers = SegmentHandlers(backend)
    *_, summary, details, session = handlers.segment(str(scene), "the pond\na purple elephant", "", 0.5, "ana")
    verdicts = {r["expression"]: (r["verdict"], r["mask_version"]) for r in details["results"]}
    assert verdicts["a purple elephant"] == (NOTHING_FOUND, None)
    assert verdicts["the pond"][1] is not None
    assert "Nothing found for 'a purple elephant'" in summary and "not saved" in summary
    assert [v["expression"] for v in backend.versions.values()] == ["the pond"]
    assert session.mask_version_ids == [verdicts["the pond"][1], None]

    *_, details, _ = handlers.segment(str(scene), "a purple elephant", "", 0.5, "ana", keep_untrusted=True)
    assert details["results"][0]["mask_version"] is not None  # kept: the user asked


def test_overlay_comes_before_the_store_write(tmp_path, scene):  # noqa: F811
    backend = FakeBackend(tmp_path)
    handlers = SegmentHandlers(backend)
    overlay, summary, session = handlers.run_model(str(scene), "the pond", "", 0.5)
    assert overlay.value["annotations"][0]["label"] == "the pond"
    assert "saving…" in summary and backend.versions == {} and not session.saved
    gallery, files, summary, details, done = handlers.finish(session, "ana")
    assert done.saved and len(gallery) == 1 and len(files) == 1 and "saving…" not in summary
    assert list(backend.versions) == [details["results"][0]["mask_version"]]
    assert set(details["seconds"]) == {"model", "overlay", "total"}
