"""The control group on two real gloo ranks (spawned processes): flags and objects cross it, and a peer that
stops answering fails the per-step exchange within run.peer_timeout_s, with an error the trainer turns into
its one line ("lost contact with the other ranks"), instead of waiting for the default group's 30 minutes.
On GPUs this is what finds a dead or hung NCCL peer: the host passes NCCL's asynchronous collectives and
waits at this exchange."""

from __future__ import annotations

import multiprocessing as mp
import socket
import time

import pytest

PEER_TIMEOUT_S = 3.0
HANG_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, hang: bool, results) -> None:
    import torch

    from salt.engine import collectives
    from salt.engine.stopping import collective_failed, collective_reason

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    collectives.setup(torch.device("cpu"), PEER_TIMEOUT_S)
    flags = collectives.max_flags([rank, 10 * rank])
    objects = collectives.gather_objects({"rank": rank})
    if rank == 1 and hang:
        time.sleep(HANG_S)  # alive, connected, silent: a hung peer
        return
    t0 = time.monotonic()
    try:
        collectives.max_flags([0, 0])
        outcome = ("answered", "", False)
    except RuntimeError as e:
        outcome = ("failed", collective_reason(e), collective_failed(e))
    results.put((rank, flags, objects, outcome, time.monotonic() - t0))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("hang", [False, True])
def test_control_group_exchanges_and_a_hung_peer_fails_it_in_time(hang):
    ctx = mp.get_context("spawn")  # never fork a process with threads
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, hang, results)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        got = {}
        for _ in range(1 if hang else 2):
            rank, flags, objects, outcome, seconds = results.get(timeout=120)
            got[rank] = (flags, objects, outcome, seconds)
    finally:
        for p in procs:
            p.kill()
            p.join(timeout=30)
    flags, objects, outcome, seconds = got[0]
    assert flags == [1, 10] and objects == [{"rank": 0}, {"rank": 1}]
    if not hang:
        assert outcome[0] == "answered" and got[1][2][0] == "answered"
        return
    kind, reason, recognised = outcome
    assert kind == "failed" and recognised, reason
    assert "\n" not in reason and reason
    assert seconds < HANG_S / 2  # the timeout, not the peer's waking up, ended the wait
