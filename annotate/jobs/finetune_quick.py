"""The quick fine-tune mode (``FinetuneConfig.mode == "quick"``): adapt the base to a few
corrections in seconds (:mod:`sbanet.training.adapt`; by default new correction heads,
:mod:`sbanet.modeling.correction_head`, with the network unchanged).

Same data, same run rows, same outcome as the full mode (:mod:`annotate.jobs.finetune_job`): the
accepted train-split masks are the corrections, the held-out masks measure the base and every
check, a replay draw of the base's own training data is mixed in, the best check's weights are
kept, the result is registered as a new model version and, with ``activate``, made active only
when it beats the base on the held-out mIoU. What differs is the work: the frozen part of the
network runs once per correction and flip / quarter turn (and once per replay and held-out
sample) and only what ``quick_train`` names trains on those cached maps; there is nothing to resume (a run
that dies is rerun from the start: it costs seconds).
"""

from __future__ import annotations

from typing import Any

from annotate.jobs.finetune_record import ClaimedRun, FinetuneOutcome, Reporter, jsonable_metrics, register_result
from sbanet.checkpoint import load_pretrained
from sbanet.training.adapt import AdaptConfig, adapt_decoder, cache_features, cache_level, evaluate_cached
from sbanet.training.evaluation import evaluate

from ..store import runs
from ..store.database import Store
from .finetune_data import FinetuneConfig, model_dataset, quick_size, store_samples

# corrections before the app offers a quick run (docs/results.md, "Quick adaptation")
DEFAULT_ADAPT_AFTER = 5
# overall progress of each stage of a quick run: (start, end)
QUICK_STAGES = {
    "caching": (0.0, 0.55),
    "evaluating base": (0.55, 0.6),
    "training": (0.6, 0.97),
    "saving": (0.97, 1.0),
}


def adapt_config(config: FinetuneConfig) -> AdaptConfig:
    """The :class:`sbanet.training.adapt.AdaptConfig` a quick run uses."""
    return AdaptConfig(
        train=config.quick_train,
        steps=config.quick_steps,
        lr=config.quick_lr,
        batch_size=config.batch_size,
        transforms=config.quick_transforms,
        crop=config.quick_crop,
        replay_weight=config.quick_replay_weight,
        anchor=config.quick_anchor,
        foreground_weight=config.quick_foreground_weight,
        check_every=config.checkpoint_every or max(1, config.quick_steps // 6),
        seed=config.seed,
    )


def quick_attempt(
    store: Store, claimed: ClaimedRun, reporter: Reporter, train_ids: list[int], eval_ids: list[int],
    plan: dict[str, Any], replay: list[Any],
) -> FinetuneOutcome:  # fmt: skip
    """One quick run from the chosen masks and the resolved plan to the registered model."""
    import torch

    config, run_id = claimed.config, claimed.run_id
    reporter.stages = QUICK_STAGES
    settings = adapt_config(config)
    model, tokenizer = load_pretrained(claimed.base_source, allow_pickle=config.allow_pickle)
    model.eval()
    metrics_before = claimed.metrics_before
    held_out_samples = store_samples(store, eval_ids)  # read once: scored at both sizes below
    size = quick_size(config, model.config.image_size)
    if size != model.config.image_size:
        if metrics_before is None:  # the base as it is, at its own input size
            metrics_before = jsonable_metrics(evaluate(model, model_dataset(held_out_samples, model.config, tokenizer)))
        model.config.image_size = size  # the new version predicts at this size
    corrections = model_dataset(store_samples(store, train_ids), model.config, tokenizer, augment=True)
    held_out = model_dataset(held_out_samples, model.config, tokenizer)
    replay_set = model_dataset(replay, model.config, tokenizer) if replay else None
    summary = f"quick: {len(train_ids)} accepted masks x {settings.transforms} flips/turns"
    replay_note = f" + {len(replay)} replay samples" if replay else f"\n{plan['replay']}"
    reporter.report("caching", 0.0, f"{summary}{replay_note}; {len(eval_ids)} held out", log_line=True)

    # --- the frozen part once: corrections x transforms, replay, held-out ----------------------
    total = len(corrections) * settings.transforms + len(held_out) + (len(replay_set) if replay_set else 0)

    def progress(offset: int) -> Any:
        def report(count: int, _: int) -> None:
            done = offset + count
            reporter.report("caching", done / total, f"computing frozen features: {done}/{total}")

        return report

    stop = reporter.should_stop
    level = cache_level(settings.train)
    with torch.no_grad():
        cached = cache_features(model, corrections, settings.transforms, progress=progress(0), cancel=stop, level=level)
        offset = len(corrections) * settings.transforms
        held = None
        if cached is not None:
            held = cache_features(model, held_out, 1, progress=progress(offset), cancel=stop, level=level)
        offset += len(held_out)
        replayed = None
        if held is not None and replay_set is not None:
            replayed = cache_features(model, replay_set, 1, progress=progress(offset), cancel=stop, level=level)
    if cached is None or held is None or (replay_set is not None and replayed is None):
        return _cancelled(store, run_id, "cancelled while computing features")

    metrics_before = metrics_before or jsonable_metrics(evaluate_cached(model, held))
    reporter.report("evaluating base", 1.0, f"base held-out mIoU {metrics_before['mIoU']:.4f}", log_line=True)
    with store.Session.begin() as session:
        runs.record_metrics(session, run_id, before=metrics_before)

    # --- fit the decoder on the cached maps; keep the best held-out check ---------------------
    def on_step(step: int, steps: int, loss: float, metrics: dict[str, Any] | None) -> None:
        extra = {"step": step, "total_steps": steps, "loss": loss}
        if metrics is not None:
            message = f"step {step}: held-out mIoU {metrics['mIoU']:.4f}"
            reporter.report("training", step / steps, message, log_line=True, **extra)
        else:
            reporter.report("training", step / steps, f"step {step}/{steps} loss {loss:.4f}", **extra)

    result = adapt_decoder(model, cached, settings, replay=replayed, held_out=held, callback=on_step, cancel=stop)
    if result.cancelled:
        return _cancelled(store, run_id, f"cancelled at step {result.steps}")
    metrics_after = jsonable_metrics(evaluate_cached(model, held))
    plan = {**plan, "steps_run": result.steps, "kept_step": result.kept_step, "checks": result.history}

    # --- save and register; activate only when better on the held-out masks -------------------
    record = {"config": config.to_dict(), "plan": plan, "adapt": settings.to_dict()}
    kept = f" (kept step {result.kept_step} of {result.steps})"
    return register_result(
        store, claimed, reporter, model, tokenizer, record, (metrics_before, metrics_after), kept, "quick"
    )


def _cancelled(store: Store, run_id: int, message: str) -> FinetuneOutcome:

    with store.Session.begin() as session:
        runs.finish_run(session, run_id, "cancelled", message=message)
    return FinetuneOutcome(run_id, "cancelled", None, None, None)
