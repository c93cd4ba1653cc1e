"""slmlab: a laboratory for inventing, training and dissecting small language model architectures."""

__version__ = "0.1.0"
