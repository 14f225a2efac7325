"""PixelRNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016): Row LSTM and Diagonal BiLSTM (``network.py``), their
LSTM update and skewing (``recurrent.py``) and their cached stepper (``cached.py``)."""

from pixelcnn.models.pixelrnn.network import DiagonalBiLSTM, DiagonalBiLSTMConfig, RowLSTM, RowLSTMConfig

__all__ = ["RowLSTM", "RowLSTMConfig", "DiagonalBiLSTM", "DiagonalBiLSTMConfig"]
