"""llmkit: the reference pieces of the course, one module per lesson."""

__version__ = "0.1.0"
