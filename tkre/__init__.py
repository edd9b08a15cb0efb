"""tkre: few-shot relation extraction via two-stage knowledge-guided pre-training, on Ray."""

__version__ = "0.1.0"
