"""``python -m taxonomist.cli``."""

from __future__ import annotations

from . import main

main()
