"""PixelCNN++ (Salimans, Karpathy, Chen & Kingma 2017): the U-net of shifted convolutions (``network.py``, on
``shifted.py``) and its cached stepper (``cached.py``). Its output, the discretized logistic mixture, is one of
the shared distributions (``pixelcnn.distributions.logistic_mixture``)."""

from pixelcnn.models.pixelcnn_pp.network import PAPER_STAGES, PixelCNNPP, PixelCNNPPConfig, max_stages

__all__ = ["PixelCNNPP", "PixelCNNPPConfig", "PAPER_STAGES", "max_stages"]
