"""A V-JEPA-2-style loader for comparison: each sample opens its *original* source video with decord,
reads 16 frames at a stride from a random start with `get_batch`, and augments in torch (the same
random-resized crop, flip and normalisation as ours), in DataLoader worker processes. This is what
users run before they have shards."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from salt.data.decode import augment
from salt.data.views import ViewRecipe, train_view
from salt.processes import mp_context


class SourceVideoDataset(Dataset):
    def __init__(self, paths: list[str], recipe: ViewRecipe, mean, std, seed: int = 0):
        self.paths, self.recipe, self.mean, self.std, self.seed = paths, recipe, mean, std, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        import decord

        vr = decord.VideoReader(self.paths[i], num_threads=1)
        n = len(vr)
        start = train_view(self.recipe, f"{self.paths[i]}#{i}", self.seed, n, 1, 1).start_frame
        idx = np.minimum(np.arange(self.recipe.num_frames) * self.recipe.frame_stride + start, n - 1)
        frames = vr.get_batch(list(idx)).asnumpy()  # (T, H, W, 3) uint8
        view = train_view(self.recipe, f"{self.paths[i]}#{i}", self.seed, n, frames.shape[1], frames.shape[2])
        return augment(frames, view, self.recipe.crop_size, self.mean, self.std)  # (3, T, S, S)


def vjepa_style_loader(paths: list[str], recipe: ViewRecipe, batch_size: int, workers: int, mean, std,
                       seed: int = 0) -> DataLoader:
    ds = SourceVideoDataset(paths, recipe, mean, std, seed)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True, generator=g,
                      persistent_workers=workers > 0, multiprocessing_context=mp_context() if workers else None)
