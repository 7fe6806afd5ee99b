"""Frozen evaluation: an attentive probe on top of a frozen encoder."""
