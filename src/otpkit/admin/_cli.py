"""``otpkit shell --connect HOST:PORT`` and the one-shot commands (not built yet)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    print(f"otpkit: {argv[0]}: not built yet", file=sys.stderr)
    return 2
