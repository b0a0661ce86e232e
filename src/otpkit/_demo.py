"""``otpkit demo`` (not built yet)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    print("otpkit: demo: not built yet", file=sys.stderr)
    return 2
