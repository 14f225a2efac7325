"""Exceptions raised by pixelcnn.

Every error a user can cause derives from :class:`PixelCNNError`; the command line turns these
into one line on stderr and a non-zero exit status instead of a traceback. Each message says
what was expected and what came.
"""


class PixelCNNError(Exception):
    """Base class of every error pixelcnn raises for bad input."""


class InvalidImageError(PixelCNNError, ValueError):
    """Images of the wrong shape, dtype, channel count or value range."""


class InvalidLabelError(PixelCNNError, ValueError):
    """Class labels missing, unexpected, of the wrong shape, or outside [0, num_classes)."""


class ConfigError(PixelCNNError, ValueError):
    """An unknown model, an unknown hyperparameter, or a value it cannot take."""


class CheckpointError(PixelCNNError):
    """A checkpoint folder that is missing, corrupted, or from another format version."""


class DataError(PixelCNNError):
    """An unknown dataset, or data files that are missing or fail their checksum."""


class TrainingError(PixelCNNError):
    """Training cannot go on (for example the loss became NaN or infinite)."""


class CompressionError(PixelCNNError):
    """A compressed file that is truncated, corrupted, from another version or another model."""
