"""``python -m meshplan``: the same command line as the ``meshplan`` script."""

from .cli import main

raise SystemExit(main())
