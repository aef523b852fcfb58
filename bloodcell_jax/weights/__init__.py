"""Pretrained weights: the Keras port and loading weights into a new run."""
