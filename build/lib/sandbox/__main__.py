"""Entry point for `python -m sandbox`; the work happens in sandbox.cli so tests can call `main()` directly."""

from __future__ import annotations

import sys

from sandbox.cli import main

if __name__ == "__main__":
    sys.exit(main())
