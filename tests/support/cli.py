"""The command line run in-process through ``meshplan.cli.main(argv)``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from click.testing import CliRunner
from meshplan.cli import main

CliResult = tuple[int, str, str]  # exit code, stdout, stderr
RunCli = Callable[..., CliResult]


def run_cli(args: Sequence[str], env: dict[str, str] | None = None) -> CliResult:
    """``meshplan <args>``: exit code, stdout and stderr (kept apart).

    click's runner isolation gives the command its own streams and environment; whatever
    ``main`` raises (a crash instead of an exit code) propagates to the test.
    """
    runner = CliRunner()
    with runner.isolation(env=env) as (out, err, _):
        try:
            code = main(list(args))
        finally:  # the isolated streams buffer what is not written through click.echo
            sys.stdout.flush()
            sys.stderr.flush()
    return code, _text(out.getvalue()), _text(err.getvalue())


def run_validate(repo: Path, *extra: str) -> CliResult:
    return run_cli(["validate", "--repo", str(repo), *extra])


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").replace("\r\n", "\n")
