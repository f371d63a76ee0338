"""
``python -m soak``: the chaos soak.  See soak/README.md.
"""

from __future__ import annotations

import sys

from soak import main


if __name__ == "__main__":
    sys.exit(main())
