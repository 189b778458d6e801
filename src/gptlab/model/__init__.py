"""The model side of gptlab: configuration, transformer parts, GPT and the bigram baseline."""

from gptlab.model.bigram import BigramLanguageModel
from gptlab.model.cache import KVCache
from gptlab.model.config import ModelConfig
from gptlab.model.gpt import GPT

__all__ = ["GPT", "BigramLanguageModel", "KVCache", "ModelConfig"]
