"""Locally masked convolutions (Jain, Abbeel & Pathak 2020): a network that generates in any pixel order
(``network.py``), its split convolution (``local_conv.py``), the orders themselves (``orders.py``) and its cached
stepper (``cached.py``)."""

from pixelcnn.models.lmconv.network import AUTO_ORDERS, MEMO_SIZE, LMConv, LMConvConfig

__all__ = ["LMConv", "LMConvConfig", "AUTO_ORDERS", "MEMO_SIZE"]
