"""Training of QORNNs in PyTorch: quantizers, orthogonal parametrizations, model, tasks, trainer."""

from .model import QORNN  # noqa: F401
