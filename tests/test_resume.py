"""The one resume guard (salt/resume.py) and the precision names (salt/precision.py)."""

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
