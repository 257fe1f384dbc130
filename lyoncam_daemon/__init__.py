"""lyoncam: turn Grand Lyon CriTer traffic cameras into object-detection training data."""

__version__ = "0.1.0"
