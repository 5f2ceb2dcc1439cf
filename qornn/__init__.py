"""qornn: Quantized approximately Orthogonal RNNs, from PyTorch training to bit-exact integer cores.

Stages (data flows one way): ``qornn.train`` -> ``qornn.export`` -> ``qornn.hls``.
"""

__version__ = "0.1.0"
