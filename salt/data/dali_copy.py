"""DALI's outputs into one torch tensor on the training device, without a race and without a host wait.

DALI reuses an output's buffers once the next `pipeline.run()` is called. On a GPU the copy into torch is
queued on a side stream of the loader's own device, the training stream waits for it with an event (a
device-side wait), and the next `run()` first waits for that copy only (`before_run`), which was queued
a step earlier and is done by then: the buffers are never overwritten mid-copy, and the training stream
never waits for the host. On the CPU the copy is synchronous.
"""

from __future__ import annotations

import torch


class DaliToTorch:
    def __init__(self, device: torch.device):
        """device: where the batches go: a CUDA device with its index (the loader's own GPU), or the CPU."""
        if device.type == "cuda" and device.index is None:
            raise ValueError("DaliToTorch needs the CUDA device's index (the GPU DALI runs on)")
        self.device = device
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._done: torch.cuda.Event | None = None
        self._held = None  # DALI's outputs whose copy may still be running

    def before_run(self) -> None:
        """Call before the next pipeline.run(): the previous copy has finished reading DALI's buffers."""
        if self._done is not None:
            self._done.synchronize()
            self._done, self._held = None, None

    def copy(self, outputs, dtype: torch.dtype) -> torch.Tensor:
        """V outputs of (B, ...) each → one (V * B, ...) tensor, view-major, copied straight from DALI's
        buffers into slices of the result."""
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = [o.as_tensor() for o in outputs]
        b, *rest = dense[0].shape()
        shape = (len(dense) * b, *rest)
        if self._stream is None:
            target = torch.empty(shape, dtype=dtype)
            for v, d in enumerate(dense):
                feed_ndarray(d, target[v * b:(v + 1) * b])
            return target
        consumer = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._stream):
            target = torch.empty(shape, dtype=dtype, device=self.device)  # a block of the side stream's pool
            for v, d in enumerate(dense):
                feed_ndarray(d, target[v * b:(v + 1) * b], cuda_stream=self._stream)
            done = torch.cuda.Event()
            done.record(self._stream)
        consumer.wait_event(done)
        target.record_stream(consumer)  # not reused by the side stream until the training stream is done with it
        self._done, self._held = done, outputs
        return target
