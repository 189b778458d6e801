"""gptlab: train a small GPT language model from scratch on your own text, then use it."""

from gptlab.errors import GptlabError

__version__ = "0.1.0"

__all__ = ["GptlabError", "__version__"]
