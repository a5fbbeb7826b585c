"""The training loop: parameter groups, schedule, accumulation, clipping, autocast, exact
resume, cancellation and checkpoint contents, on the tiny preset at 32x32."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from numerics import assert_within_drift
from training_fixtures import single_thread, toy_dataset

from sbanet import sbanet_tiny
from sbanet.checkpoint import load_pretrained
from sbanet.inference.predictor import Predictor
from sbanet.training.engine import TrainConfig, train
from sbanet.training.optim import PolySchedule, build_optimizer, build_scheduler, param_groups
from sbanet.training.train_state import CHECKPOINT_KEYS, load_training_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def tiny(**overrides):
    torch.manual_seed(0)
    return sbanet_tiny(image_size=32, max_tokens=8, **overrides)


@pytest.fixture(scope="module")
def data(tokenizer):
    return toy_dataset(tokenizer, n_images=4, seed=0), toy_dataset(tokenizer, n_images=2, seed=1)


# --- parameter groups and schedule ------------------------------------------------------------
def test_param_groups_decay_only_weight_matrices():
    model = tiny()
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"decay", "no_decay"}
    names = dict(model.named_parameters())
    by_id = {id(p): n for n, p in names.items()}
    decay_names = {by_id[id(p)] for p in groups["decay"]["params"]}
    no_decay_names = {by_id[id(p)] for p in groups["no_decay"]["params"]}
    assert decay_names == set(groups["decay"]["param_names"])  # the optimiser keeps the names
    assert decay_names | no_decay_names == set(names) and not decay_names & no_decay_names
    assert groups["decay"]["weight_decay"] == 0.01 and groups["no_decay"]["weight_decay"] == 0.0
    for name in no_decay_names:  # biases, norms, position tables, embeddings, query tokens
        assert names[name].ndim < 2 or any(
            key in name
            for key in ("relative_position_bias_table", "embeddings", "query_tokens.tokens", "query_tokens.pos_embed")
        ), name
    for name in decay_names:
        assert names[name].ndim >= 2 and "norm" not in name.lower() and "embeddings" not in name, name
    # the named cases, explicitly
    assert "visual_encoder.layers.0.blocks.0.attn.relative_position_bias_table" in no_decay_names
    assert "fusions.0.query_tokens.tokens" in no_decay_names
    assert "fusions.0.query_tokens.pos_embed" in no_decay_names
    assert "text_encoder.bert.embeddings.word_embeddings.weight" in no_decay_names
    assert "text_encoder.bert.embeddings.position_embeddings.weight" in no_decay_names
    assert "text_encoder.bert.encoder.layer.0.attention.output.LayerNorm.weight" in no_decay_names
    assert "fusions.0.query_tokens.to_q.weight" in decay_names
    assert len(groups["decay"]["params"]) + len(groups["no_decay"]["params"]) == len(names)
    # the plain group builder agrees with what the optimiser holds
    plain = {g["name"]: {n for n, _ in g["params"]} for g in param_groups(model, weight_decay=0.01, lr=1e-3)}
    assert plain == {"decay": decay_names, "no_decay": no_decay_names}


def test_param_groups_with_encoder_lr_and_frozen_text():
    model = tiny()
    model.text_encoder.requires_grad_(False)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.01, encoder_lr_mult=0.1)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"decay", "no_decay", "encoder_decay", "encoder_no_decay"}
    assert groups["encoder_decay"]["lr"] == pytest.approx(1e-4) and groups["decay"]["lr"] == 1e-3
    everything = [n for g in groups.values() for n in g["param_names"]]
    assert not any(n.startswith("text_encoder.") for n in everything)
    assert all(n.startswith("visual_encoder.") for n in groups["encoder_decay"]["param_names"])
    assert len(everything) == sum(1 for p in model.parameters() if p.requires_grad)


def test_lavt_optimizer_scope_is_lavts_train_py():
    """LAVT's train.py: backbone norms and position tables undecayed, everything else decayed
    (biases too), the decoder all decayed, BERT's layers 0-9 only (embeddings never train)."""
    model = tiny()
    groups = {g["name"]: {n for n, _ in g["params"]} for g in param_groups(model, 0.01, 1e-3, scope="lavt")}
    decay, no_decay = groups["decay"], groups["no_decay"]
    names = dict(model.named_parameters())
    text = {n for n in names if n.startswith("text_encoder.")}
    # the tiny BERT has 2 layers: both train (< 10), its embeddings do not, nothing of it is undecayed
    assert {n for n in text if ".encoder.layer." in n} <= decay
    assert not {n for n in text if ".embeddings." in n} & (decay | no_decay)
    assert "text_encoder.bert.encoder.layer.0.attention.output.LayerNorm.bias" in decay
    assert {n for n in names if n.startswith("decoder.")} <= decay  # biases and BatchNorm decayed too
    assert no_decay == {
        n
        for n in names
        if not n.startswith(("text_encoder.", "decoder."))
        and (
            "norm" in n or n.endswith(("relative_position_bias_table", "query_tokens.tokens", "query_tokens.pos_embed"))
        )
    }
    assert any(
        n.endswith(".bias") and "norm" not in n for n in decay - text - {n for n in names if n.startswith("decoder.")}
    )
    # the paper's scope (the default) trains every parameter
    paper = param_groups(model, 0.01, 1e-3)
    assert sum(len(g["params"]) for g in paper) == len(names)
    assert len(decay | no_decay) == len(names) - len({n for n in text if ".embeddings." in n})


def test_lavt_scope_takes_layers_below_ten_and_refuses_an_lstm():
    from sbanet.build import build_preset
    from sbanet.training.optim import lavt_decision

    assert lavt_decision("text_encoder.bert.encoder.layer.9.output.dense.weight", set()) is True
    assert lavt_decision("text_encoder.bert.encoder.layer.10.output.dense.weight", set()) is None
    assert lavt_decision("text_encoder.clip.encoder.layers.3.mlp.fc1.bias", set()) is True
    assert lavt_decision("text_encoder.bert.pooler.dense.weight", set()) is None
    lstm = build_preset("sbanet_tiny", ablation="r101_lstm", image_size=32)
    with pytest.raises(ValueError, match="no transformer layers"):
        build_optimizer(lstm, lr=1e-3, weight_decay=0.01, scope="lavt")
    lstm.text_encoder.requires_grad_(False)  # frozen, the scope has nothing to say about it
    assert build_optimizer(lstm, lr=1e-3, weight_decay=0.01, scope="lavt").param_groups
    with pytest.raises(ValueError, match="optimizer scope"):
        param_groups(lstm, 0.01, 1e-3, scope="bert")
    with pytest.raises(ValueError, match="optimizer_scope"):
        TrainConfig(optimizer_scope="all")


def test_poly_schedule_values():
    schedule = PolySchedule(total=100)
    assert schedule(0) == 1.0
    assert schedule(50) == pytest.approx(0.5**0.9)
    assert schedule(99) == pytest.approx(0.01**0.9)
    assert schedule(100) == 0.0
    warm = PolySchedule(total=100, warmup=4)
    assert [warm(s) for s in range(4)] == pytest.approx([(1 - s / 100) ** 0.9 * (s + 1) / 4 for s in range(4)])
    assert warm(4) == pytest.approx(0.96**0.9)
    # stepped once per optimiser step, the optimiser sees exactly these factors
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    scheduler = build_scheduler(optimizer, total_steps=10)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([5e-4 * (1 - s / 10) ** 0.9 for s in range(10)])
    with pytest.raises(ValueError):
        PolySchedule(total=0)


# --- the loop -------------------------------------------------------------------------------------
def test_accumulation_equals_one_big_batch_of_identical_micro_batches(tokenizer):
    """Two identical micro-batches accumulated give the gradient of one: same weights (BERT's
    dropout, the only random part of the tiny model, is off with the text encoder frozen)."""
    pair = toy_dataset(tokenizer, n_images=1, seed=3)
    one = torch.utils.data.Subset(pair, [0, 0])  # every batch of 2 is the same: [s, s]
    same = torch.utils.data.Subset(pair, [0, 0, 0, 0])
    single, accumulated = tiny(), tiny()
    config = TrainConfig(batch_size=2, max_steps=1, lr=1e-3, freeze_text_encoder=True)
    train(single, one, config=config)
    events = []
    config.accumulate = 2
    train(accumulated, same, config=config, callback=events.append)
    assert [e.event for e in events] == ["step", "epoch", "end"]
    # parameters only: BatchNorm's running averages saw two forward passes instead of one
    for (name, a), b in zip(single.named_parameters(), accumulated.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_gradient_clipping_and_progress(data):
    model = tiny()
    events = []
    result = train(
        model, data[0], config=TrainConfig(batch_size=2, max_steps=2, grad_clip=1e-3), callback=events.append
    )
    steps = [e for e in events if e.event == "step"]
    assert [e.step for e in steps] == [1, 2] and result.steps == 2 and not result.cancelled
    assert all(e.grad_norm > 1e-3 for e in steps)  # the norm before clipping is reported
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert float(norm) <= 1e-3 * 1.001  # what the optimiser stepped with
    # the reported lr is the head's (config.lr), not the encoders' (x 0.1)
    assert steps[0].lr == pytest.approx(5e-4) and steps[1].lr == pytest.approx(5e-4 * 0.5**0.9)
    assert all(e.samples_per_s > 0 and e.total_steps == 2 for e in steps)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_steps(data, precision, tmp_path):
    model = tiny()
    before = [p.detach().clone() for p in model.parameters()]
    events = []
    config = TrainConfig(batch_size=2, max_steps=2, precision=precision)
    train(model, data[0], config=config, callback=events.append, output_dir=tmp_path)
    assert all(np.isfinite(e.loss) for e in events if e.event == "step")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    scaler = load_training_checkpoint(tmp_path / "last.pt")["scaler"]
    if precision == "bf16":
        assert changed and not scaler  # no loss scaling needed
    else:  # GradScaler: steps with inf/NaN gradients are skipped and the scale backs off
        assert changed or scaler["scale"] < 2.0**16


def test_frozen_text_encoder_does_not_change(data):
    model = tiny()
    text = {k: v.clone() for k, v in model.text_encoder.state_dict().items()}
    train(model, data[0], config=TrainConfig(batch_size=2, max_steps=1, freeze_text_encoder=True))
    assert all(torch.equal(v, model.text_encoder.state_dict()[k]) for k, v in text.items())


def test_lavt_scope_trains_what_lavt_trains(data):
    model = tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, data[0], config=TrainConfig(batch_size=2, max_steps=1, optimizer_scope="lavt"))
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if ".embeddings." in n)  # LAVT never steps them
    assert not torch.equal(
        before["text_encoder.bert.encoder.layer.1.output.dense.weight"],
        after["text_encoder.bert.encoder.layer.1.output.dense.weight"],
    )


def test_frozen_batchnorm_keeps_its_running_statistics_while_the_weights_learn(data):
    model = tiny()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    weights = {k: v.clone() for k, v in model.named_parameters() if v.requires_grad}
    train(model, data[0], config=TrainConfig(batch_size=2, max_steps=2, freeze_batchnorm=True))
    state = model.state_dict()
    assert stats and all(torch.equal(v, state[k]) for k, v in stats.items())
    assert any(not torch.equal(v, state[k]) for k, v in weights.items())


def test_resume_is_exact(data, tokenizer, tmp_path):
    """6 steps in one go == 2 steps, cancel, resume, 4 more (mid-epoch, with dropout and drop-path,
    validation and BatchNorm recalibration at each epoch end)."""
    train_set = toy_dataset(tokenizer, n_images=3, seed=0)  # 6 samples: 3 steps per epoch
    config = TrainConfig(batch_size=2, epochs=2, lr=1e-3, recalibrate_bn=1, warmup_steps=2, seed=7)
    straight = tiny(drop_path_rate=0.2, fusion_dropout=0.1)
    full = train(straight, train_set, data[1], config)
    assert full.steps == 6

    first = tiny(drop_path_rate=0.2, fusion_dropout=0.1)
    done = []
    stopped = train(
        first, train_set, data[1], config, output_dir=tmp_path, callback=done.append, cancel=lambda: len(done) >= 2
    )
    assert stopped.cancelled and stopped.steps == 2
    state = load_training_checkpoint(tmp_path / "last.pt")
    assert (state["step"], state["epoch"], state["epoch_step"]) == (2, 0, 2)

    torch.manual_seed(123)  # a different init and RNG: everything must come from the checkpoint
    second = sbanet_tiny(image_size=32, max_tokens=8, drop_path_rate=0.2, fusion_dropout=0.1)
    resumed = train(second, train_set, data[1], config, output_dir=tmp_path, resume=tmp_path / "last.pt")
    assert resumed.steps == 6 and not resumed.cancelled
    for (name, a), b in zip(straight.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert [h["val_oIoU"] for h in resumed.history] == [h["val_oIoU"] for h in full.history]


def test_checkpoints_and_export(data, tmp_path, tokenizer):
    model = tiny()
    result = train(
        model, data[0], data[1], TrainConfig(batch_size=2, epochs=1), output_dir=tmp_path, tokenizer=tokenizer,
        run_config={"note": "kept"},
    )  # fmt: skip
    assert result.best_metric == result.history[-1]["val_oIoU"]
    state = load_training_checkpoint(tmp_path / "last.pt")
    assert set(CHECKPOINT_KEYS) <= set(state)
    assert state["config"] == model.config.to_dict() and state["run_config"] == {"note": "kept"}
    assert state["train_config"]["batch_size"] == 2 and state["epoch"] == 1 and state["step"] == 4
    assert {"python", "numpy", "torch"} <= set(state["rng"][0]) and len(state["rng"]) == 1
    assert {"optimizer", "scheduler", "scaler"} <= set(state)
    best = load_training_checkpoint(tmp_path / "best.pt")
    assert best["val_metrics"]["oIoU"] == result.best_metric
    # both loadable by the library: the pickle (explicitly allowed) and the safetensors export
    reloaded, _ = load_pretrained(tmp_path / "best.pt", allow_pickle=True)
    predictor = Predictor.from_pretrained(tmp_path / "best")
    image = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    reference = Predictor(model.eval(), tokenizer).predict(image, "the red square", return_attention=False)
    for other in (Predictor(reloaded, tokenizer), predictor):
        got = other.predict(image, "the red square", return_attention=False)
        assert_within_drift(got.probability, reference.probability, atol=1e-5, check="reloaded")


def test_cancel_event_before_start_saves_position(data, tmp_path):
    stop = threading.Event()
    stop.set()
    result = train(tiny(), data[0], config=TrainConfig(batch_size=2), output_dir=tmp_path, cancel=stop)
    assert result.cancelled and result.steps == 0
    assert load_training_checkpoint(tmp_path / "last.pt")["step"] == 0
    with pytest.raises(ValueError, match="does not match"):  # another architecture: a clear error
        train(tiny(decoder_dim=16), data[0], config=TrainConfig(batch_size=2), resume=tmp_path / "last.pt")


def test_bad_configs_are_clear_errors(data):
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    assert TrainConfig(precision="none").precision == "fp32"  # what older run configs called fp32
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="no optimiser step"):
        train(tiny(), data[0], config=TrainConfig(batch_size=64))
