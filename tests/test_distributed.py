"""DDP on CPU: two gloo processes train the tiny preset for a few steps and end with identical
weights; sharded evaluation counts every validation sample exactly once; the logged step losses
are averaged over the ranks, as the epoch loss is."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from training_fixtures import toy_dataset

from sbanet import sbanet_tiny
from sbanet.training.distributed import ResumableDistributedSampler, ShardSampler, cleanup, init_from_env
from sbanet.training.engine import TrainConfig, train
from train.logger import RunLogger, read_csv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out: str, model, train_set, val_set) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    info = init_from_env("cpu")
    assert (info.rank, info.world_size) == (rank, world_size)
    if rank == 1:  # different initial weights on rank 1: DDP must broadcast rank 0's
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)
    config = TrainConfig(batch_size=2, max_steps=3, lr=1e-3, device="cpu", recalibrate_bn=1)
    run = os.path.join(out, "run")
    logger = RunLogger(run, log_every=1, tensorboard=False, plots=False, bar=False) if rank == 0 else None
    result = train(model, train_set, val_set, config, output_dir=run, callback=logger)
    torch.save({"model": model.state_dict(), "history": result.history}, os.path.join(out, f"rank{rank}.pt"))
    cleanup()


def test_two_gloo_processes_end_with_identical_weights(tmp_path, tokenizer):
    # forked workers inherit the imported libraries and the built model and data (seconds, not a
    # minute of re-importing per process on a busy 2-core machine)
    model = sbanet_tiny(image_size=32, max_tokens=8)
    train_set, val_set = toy_dataset(tokenizer, n_images=4, seed=0), toy_dataset(tokenizer, n_images=3, seed=1)
    args = (2, _free_port(), str(tmp_path), model, train_set, val_set)
    mp.start_processes(_worker, args=args, nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for (name, a), b in zip(ranks[0]["model"].items(), ranks[1]["model"].values()):
        assert torch.equal(a, b), name  # parameters, and BatchNorm statistics averaged over ranks
    initial = model.state_dict()  # the parent's copy never trained
    assert any(not torch.equal(initial[k], v) for k, v in ranks[0]["model"].items() if v.is_floating_point())
    history = [r["history"] for r in ranks]
    assert history[0] == history[1]  # merged validation metrics and all-reduced losses agree
    assert history[0][-1]["step"] == 3 and history[0][-1]["val_count"] == 6  # each val sample once
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert last["world_size"] == 2 and len(last["rng"]) == 2  # rank 0 wrote every rank's RNG
    # 8 samples, global batch 2 x 2: 2 steps an epoch; each epoch's loss is its steps' mean
    steps, epochs = read_csv(tmp_path / "run" / "steps.csv"), read_csv(tmp_path / "run" / "epochs.csv")
    assert [r["epoch"] for r in steps] == [1, 1, 2] and [r["epoch"] for r in epochs] == [1, 2]
    for row, mine in zip(epochs, (steps[:2], steps[2:])):
        assert row["train_loss"] == pytest.approx(sum(r["loss"] for r in mine) / len(mine))
        assert row["lr"] == mine[-1]["lr"]


def test_samplers_shard_and_resume():
    data = list(range(10))
    shards = [list(ShardSampler(len(data), r, 3)) for r in range(3)]
    assert sorted(i for shard in shards for i in shard) == data  # disjoint, complete, no padding
    full = ResumableDistributedSampler(data, num_replicas=2, rank=1, shuffle=True, seed=5, drop_last=False)
    full.set_epoch(3)
    order = list(full)
    full.set_start(2)
    assert list(full) == order[2:] and len(full) == len(order) - 2
    full.set_epoch(4)
    assert len(full) == len(order)  # a new epoch starts from its beginning
