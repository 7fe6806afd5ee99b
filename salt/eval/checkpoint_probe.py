"""`run.probe_every`: a training-free k-NN probe of the trained encoder at checkpoints, during training.

The bank is the first `run.probe_samples` samples of the training shards and the queries the first
`run.probe_samples` of `run.probe_shards` (labelled, held out), both with the fixed evaluation view, so
every checkpoint of a run is scored on the same clips. Cheap (two forward passes over a few hundred
clips, no training), so a collapsing or stalled run shows in metrics.jsonl while it trains. Beside k-NN
(plain and on standardised features) it logs the feature diagnostics of salt.eval.diagnostics on the first
query batch, prefixed `diag_`.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import islice

import torch
from torch import nn

from salt.data.config import LoaderConfig
from salt.data.loaders import open_loader
from salt.eval.diagnostics import feature_diagnostics
from salt.eval.features import FeatureSet, extract_features
from salt.eval.intervals import bootstrap
from salt.eval.knn import knn_correct


class CheckpointProbe:
    def __init__(self, train: LoaderConfig, held_out: str, samples: int, loader: str, device: torch.device,
                 k: int = 20):
        eval_cfg = replace(train, mode="eval", eval_clips=1, eval_crops=1, cached_views=0, views_per_clip=1,
                           flip=False)
        self.bank_cfg, self.query_cfg = eval_cfg, replace(eval_cfg, shards=held_out)
        self.samples, self.loader, self.device, self.k = samples, loader, device, k

    def _features(self, encoder: nn.Module, cfg: LoaderConfig) -> tuple[FeatureSet, list[str], torch.Tensor]:
        """(features of the first `samples` clips, classes, the first batch's clips (B, C, T, H, W))."""
        first: list[torch.Tensor] = []

        def keep_first(batches):  # a copy of the first batch's clips: a loader may reuse its buffers
            for batch in batches:
                if not first:
                    first.append(batch.model_input(self.device)[:batch.valid].clone())
                yield batch

        with open_loader(cfg, self.loader, device=self.device) as loader:
            batches = islice(iter(loader), -(-self.samples // cfg.batch_size))
            feats = extract_features(encoder, keep_first(batches), 1, self.device)
            return (FeatureSet(feats.tokens[:self.samples], feats.labels[:self.samples]), loader.shards.classes,
                    first[0])

    def __call__(self, encoder: nn.Module) -> dict[str, float]:
        was_training = encoder.training
        try:
            bank, classes, _ = self._features(encoder, self.bank_cfg)
            query, query_classes, clips = self._features(encoder, self.query_cfg)
            diagnostics = feature_diagnostics(encoder, clips) if len(clips) >= 2 else {}
        finally:
            encoder.train(was_training)
        if len(classes) < 2 or classes != query_classes:
            raise ValueError(f"run.probe_shards {self.query_cfg.shards} must be labelled with the training "
                             f"shards' classes ({classes}), has {query_classes}")
        est = bootstrap(knn_correct(bank, query, len(classes), k=self.k, device=self.device).numpy())
        std = bootstrap(knn_correct(bank, query, len(classes), k=self.k, standardize=True, device=self.device).numpy())
        return {"knn_top1": est.mean, "knn_low": est.low, "knn_high": est.high, "knn_std_top1": std.mean,
                "knn_std_low": std.low, "knn_std_high": std.high, **{f"diag_{k}": v for k, v in diagnostics.items()}}
