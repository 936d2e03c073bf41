"""Allows ``python -m cellwatch``."""

from cellwatch.cli import main

raise SystemExit(main())
