"""
``python -m referee``: the ``referee`` command.
"""

from .cli import main


raise SystemExit(main())
