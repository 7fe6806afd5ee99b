"""Distributed set-up, DeepSpeed engine, checkpoints and encoder export."""
