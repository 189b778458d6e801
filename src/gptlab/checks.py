"""Type checks that user-facing validation shares.

Python counts `True` and `False` as integers; a user who writes `n_layer = true` in a
config file made a mistake, so every "is this a whole number" test in gptlab goes here.
"""

from __future__ import annotations


def is_int(value: object) -> bool:
    """True for an int that is not a bool: `is_int(3)` → True, `is_int(True)` → False."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """True for an int or float that is not a bool (nan and inf included)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
