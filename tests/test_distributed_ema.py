"""The MINE moving average is synchronised across processes: two real ranks over gloo."""

from __future__ import annotations

import datetime
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mine_reg.estimator import EMALogPartition

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, rate: float, values: list[list[float]], out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ema = EMALogPartition(rate)
        for step_values in values:
            ema.update(torch.tensor(step_values[rank], dtype=torch.float64))
        out[rank] = (dist.get_world_size(), float(ema.log_ema), int(ema.steps))
    finally:
        dist.destroy_process_group()


def test_ema_is_averaged_across_two_processes():
    rate = 0.1
    # per step, each rank sees a different batch value of log E_B[exp T]
    values = [[0.3, 1.7], [-0.5, 2.0], [4.0, -1.0]]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, _free_port(), rate, values, out), nprocs=2, join=True)

    # by hand: the EMA of the cross-rank mean of exp(value), first step initialises it
    ema = None
    for a, b in values:
        batch = (math.exp(a) + math.exp(b)) / 2
        ema = batch if ema is None else (1 - rate) * ema + rate * batch
    for rank in (0, 1):
        world, log_ema, steps = out[rank]
        assert world == 2
        assert steps == len(values)
        assert log_ema == pytest.approx(math.log(ema), rel=1e-9)
    assert out[0][1] == out[1][1]


def _estimate_on_rank_zero_only(rank: int, world: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a short timeout turns a stray collective (the bug this guards against) into a failure
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=30))
    try:
        torch.set_num_threads(1)
        if rank == 0:  # rank 1 never calls it: a collective inside would hang or fail
            from mine_reg import estimate_mi
            from mine_reg.synthetic import correlated_gaussian

            x, z = correlated_gaussian(1200, 2, 0.5, seed=0)
            out[rank] = (dist.get_world_size(), estimate_mi(x, z, batch_size=128, max_steps=50).mi)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_estimate_mi_runs_on_one_rank_of_two():
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_estimate_on_rank_zero_only, args=(2, _free_port(), out), nprocs=2, join=True)
    world, mi = out[0]
    assert world == 2 and math.isfinite(mi)
