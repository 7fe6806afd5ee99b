"""Frozen evaluation of encoders: feature extraction, the attentive and k-NN probes, their intervals, and
the k-NN probe at training checkpoints."""
