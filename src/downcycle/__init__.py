"""downcycle: make smaller language models out of big pretrained ones, and prove how good they are."""

__version__ = "0.1.0"
