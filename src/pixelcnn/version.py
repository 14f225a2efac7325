"""The package version, a leaf that checkpoints and run folders record without importing the package."""

__version__ = "0.2.0"
