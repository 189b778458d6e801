"""Text preprocessing: optional, composable cleaning steps and corpus statistics.

The lecture trains on raw text, so gptlab cleans nothing unless asked. Steps are named so a
CLI flag can list them (`--clean nfc,newlines,lower`); they run in the order given:

- `nfc`, `nfkc`: Unicode normalization (NFKC also folds compatibility forms: "ﬁ" -> "fi").
- `newlines`: "\\r\\n" and lone "\\r" -> "\\n".
- `lower`: lowercase.
- `seed`: keep only seed 000's allow-list `[a-zA-Z\\s,.:;?_&$!"()\\-*\\[\\]]`, drop the rest.
- `strip`: remove leading and trailing whitespace (seed 000 strips after filtering).

Seed 000's full recipe is `lower,seed,strip`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from gptlab.errors import ConfigError

if TYPE_CHECKING:
    from gptlab.tokenizers import Tokenizer

SEED_DISALLOWED_RE = re.compile(r'[^a-zA-Z\s,.:;?_&$!"()\-\*\[\]]')  # seed 000
_NEWLINE_RE = re.compile(r"\r\n?")

CLEAN_STEPS: dict[str, Callable[[str], str]] = {
    "nfc": lambda text: unicodedata.normalize("NFC", text),
    "nfkc": lambda text: unicodedata.normalize("NFKC", text),
    "newlines": lambda text: _NEWLINE_RE.sub("\n", text),
    "lower": str.lower,
    "seed": lambda text: SEED_DISALLOWED_RE.sub("", text),
    "strip": str.strip,
}
SEED_RECIPE = ("lower", "seed", "strip")


def parse_steps(steps: str | Sequence[str] | None) -> list[str]:
    """Normalize "nfc,lower" / ["nfc", "lower"] / None into a checked list of step names.

    Raises:
        ConfigError: an unknown step, naming it and the valid ones.
    """
    if steps is None:
        return []
    if isinstance(steps, str):
        steps = steps.split(",")
    names = [s.strip().lower() for s in steps if s.strip()]
    for name in names:
        if name not in CLEAN_STEPS:
            raise ConfigError(
                f"unknown cleaning step {name!r}: choose from {', '.join(CLEAN_STEPS)} "
                "(comma-separated, e.g. --clean nfc,lower)"
            )
    return names


def clean(text: str, steps: str | Sequence[str] | None = ()) -> str:
    """Apply cleaning `steps` (names from CLEAN_STEPS, as a list or a comma-separated
    string; none keeps `text`) to `text`, in order."""
    for name in parse_steps(steps):
        text = CLEAN_STEPS[name](text)
    return text


def count_lines(text: str) -> int:
    """Number of lines; a last line without a trailing newline still counts."""
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


def corpus_stats(text: str, tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """Characters, bytes, lines and distinct characters of `text`; tokens too with a tokenizer.

    Returns:
        {"characters", "bytes", "lines", "distinct_characters"} and, with `tokenizer`,
        {"tokenizer", "vocab_size", "tokens", "tokens_per_char"}.
    """
    from gptlab.tokenizers.char import distinct_chars

    stats: dict[str, Any] = {
        "characters": len(text),
        "bytes": len(text.encode("utf-8", "surrogatepass")),
        "lines": count_lines(text),
        "distinct_characters": len(distinct_chars([text])),
    }
    if tokenizer is not None:
        n_tokens = len(tokenizer.encode_to_array(text))
        stats.update(
            tokenizer=tokenizer.name,
            vocab_size=tokenizer.vocab_size,
            tokens=n_tokens,
            tokens_per_char=n_tokens / len(text) if text else 0.0,
        )
    return stats
