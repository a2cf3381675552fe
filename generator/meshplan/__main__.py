"""``python -m meshplan``: the same command line as the ``meshplan`` script."""

from .cli import run

run()
