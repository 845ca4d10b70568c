"""World models: action domains and codecs, model architectures, samplers, checkpoints, registry."""

__version__ = "0.1.0"
