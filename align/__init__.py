"""align: preference alignment of multimodal LLMs against hallucination."""

__version__ = "0.1.0.dev0"
