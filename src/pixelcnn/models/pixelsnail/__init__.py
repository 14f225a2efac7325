"""PixelSNAIL (Chen, Mishra, Rohaninejad & Abbeel 2018): gated residual blocks of masked convolutions interleaved
with causal self-attention over every earlier pixel (``network.py``), and its cached stepper with a key/value
cache (``cached.py``)."""

from pixelcnn.models.pixelsnail.network import PixelSNAIL, PixelSNAILConfig

__all__ = ["PixelSNAIL", "PixelSNAILConfig"]
