"""The classic table for reading ‖a−b‖/(‖a‖+‖b‖): excellent, ok, suspicious, wrong."""
from __future__ import annotations

# The classic reading of ‖a−b‖/(‖a‖+‖b‖) (CS231n notes; Ng's UFLDL gradient-checking notes).
BANDS = ((1e-7, "excellent"), (1e-5, "ok"), (1e-3, "suspicious"))


def band_of(relative_difference: float) -> str:
    """The row of the classic table: excellent < 1e-7 ≤ ok < 1e-5 ≤ suspicious < 1e-3 ≤ wrong."""
    for bound, name in BANDS:
        if relative_difference < bound:
            return name
    return "wrong"
