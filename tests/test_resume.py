"""The one resume guard (salt/resume.py), the precision names (salt/precision.py) and stop signals that a
finalizer swallowed (salt/interrupt.py)."""

from __future__ import annotations

import pytest
import torch

from salt.precision import short_name, torch_dtype
from salt.resume import changed_settings, describe_changes, flatten


def test_changed_settings_names_each_dotted_key_that_differs():
    old = {"optim": {"lr": 1e-3, "betas": [0.9, 0.99]}, "run": {"steps": 10, "dir": "a"}, "shards": {"path": "/x"}}
    new = {"optim": {"lr": 2e-3, "betas": [0.9, 0.99]}, "run": {"steps": 20, "dir": "a"}, "shards": {"path": "/y"},
           "masks": {"kind": "tube"}}
    assert flatten(old)["optim.lr"] == 1e-3
    changes = changed_settings(old, new, ignore={"run.steps"}, ignore_leaf={"path"})
    assert changes == [("masks.kind", None, "tube"), ("optim.lr", 1e-3, 2e-3)]
    assert describe_changes(changes) == "masks.kind: None -> 'tube'; optim.lr: 0.001 -> 0.002"
    assert changed_settings(old, old) == []


def test_precision_names_map_both_spellings():
    assert torch_dtype("bf16") is torch_dtype("bfloat16") is torch.bfloat16
    assert torch_dtype("fp16") is torch.float16 and torch_dtype("fp32") is torch.float32
    assert short_name(torch.bfloat16) == "bf16" and short_name(None) is None
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        torch_dtype("int8")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the ignored raise in __del__
def test_a_stop_signal_swallowed_by_a_finalizer_still_stops_the_job():
    import gc
    import os
    import signal

    from salt.interrupt import Stopped, raise_on_stop_signals

    class SignalledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler's exception is ignored in __del__

    with pytest.raises(Stopped, match="SIGTERM"), raise_on_stop_signals() as check:
        SignalledWhileCollected()  # collected at once: its __del__ gets the signal
        gc.collect()
        check()
        pytest.fail("check() did not raise")
