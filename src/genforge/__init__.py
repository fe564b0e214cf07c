"""genforge: train, sample, evaluate and compare GANs and VQ-VAEs."""

from genforge.errors import GenforgeError

__version__ = "0.1.0"
__all__ = ["GenforgeError", "__version__"]
