"""The ``meshplan`` command line.

Exit codes: 0 ok, 1 input (or environment) problem, 2 usage error, 3 internal bug.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .diagnostics import Diagnostic, InputError, MeshplanError, Severity
from .pipeline import render_repository, validate
from .write import diff_against, write_tree

F = TypeVar("F", bound=Callable[..., Any])

REPO_OPTION = click.option(
    "--repo",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The repository holding inventory/ and requirements/.",
)
FORMAT_OPTION = click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people, json for tools (see README: 'Diagnostics as JSON').",
)


def print_diagnostics(diagnostics: Iterable[Diagnostic], *, quiet_notices: bool = False) -> None:
    for diagnostic in diagnostics:
        if quiet_notices and diagnostic.severity is Severity.NOTICE:
            continue
        click.echo(diagnostic.format_text(), err=True)


def diagnostics_json(diagnostics: tuple[Diagnostic, ...], ok: bool) -> str:
    counts = {s.value: sum(d.severity is s for d in diagnostics) for s in Severity}
    return json.dumps(
        {"ok": ok, "counts": counts, "diagnostics": [d.to_json() for d in diagnostics]},
        indent=2,
        sort_keys=True,
    )


def guarded(command: F) -> F:
    """Turn meshplan errors into exit codes; anything unexpected is a bug (exit 3)."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InputError as exc:
            print_diagnostics(exc.diagnostics)
            click.echo(f"meshplan: {exc}", err=True)
            sys.exit(exc.exit_code)
        except MeshplanError as exc:
            click.echo(f"meshplan: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place that catches everything
            click.echo(f"meshplan: internal error: {type(exc).__name__}: {exc}", err=True)
            if os.environ.get("MESHPLAN_DEBUG"):
                traceback.print_exc()
            else:
                click.echo("This is a bug in meshplan. Re-run with MESHPLAN_DEBUG=1 for the "
                           "traceback and report it.", err=True)
            sys.exit(3)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshplan")
def cli() -> None:
    """meshplan: cross-cluster Cilium policies, Services and Namespaces from requirements.

    Reads inventory/ (domains, clusters, services) and requirements/<domain>/ (who may talk to
    whom) from a git repository and renders one Kustomize directory per cluster.
    """


@cli.command("validate")
@REPO_OPTION
@FORMAT_OPTION
@guarded
def validate_command(repo: Path, output_format: str) -> None:
    """Check the inventory and requirements; report every problem with file:line:col.

    Exit 0 when valid (warnings allowed), 1 when there are errors.
    """
    inventory, diagnostics = validate(repo)
    ok = inventory is not None
    if output_format == "json":
        click.echo(diagnostics_json(diagnostics, ok))
    else:
        print_diagnostics(diagnostics)
        if ok:
            assert inventory is not None
            clusters = sum(len(d.clusters) for d in inventory.domains)
            services = sum(len(d.services) for d in inventory.domains)
            click.echo(f"valid: {len(inventory.domains)} domain(s), {clusters} cluster(s), "
                       f"{services} service(s), {len(inventory.requirements)} requirement(s)")
        else:
            errors = sum(d.severity is Severity.ERROR for d in diagnostics)
            click.echo(f"invalid: {errors} error(s)", err=True)
    sys.exit(0 if ok else 1)


@cli.command("render")
@REPO_OPTION
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder.  [default: <repo>/rendered]")
@click.option("--check", is_flag=True,
              help="Render to memory and exit 1 if the output folder differs (CI drift check).")
@guarded
def render_command(repo: Path, out: Path | None, check: bool) -> None:
    """Validate, refine and write one Kustomize directory per cluster.

    The output folder is replaced atomically: it appears whole or not at all, and files whose
    content did not change are left untouched.
    """
    out = out if out is not None else repo / "rendered"
    rendered, diagnostics = render_repository(repo)
    print_diagnostics(diagnostics)
    warnings = sum(d.severity is Severity.WARNING for d in diagnostics)
    if check:
        drift = diff_against(out, rendered.files)
        if drift.unchanged:
            click.echo(f"up to date: {out}")
            return
        for path in drift.changed:
            click.echo(f"differs: {out / path}")
        for path in drift.removed:
            click.echo(f"not generated any more: {out / path}")
        click.echo(f"{out} is out of date: run `meshplan render`", err=True)
        sys.exit(1)
    result = write_tree(out, rendered.files)
    s = rendered.summary
    state = ("unchanged" if result.unchanged
             else f"{len(result.changed)} file(s) written, {len(result.removed)} removed")
    click.echo(f"rendered {s.clusters} cluster(s): {s.policies} policies, {s.services} services, "
               f"{s.namespaces} namespaces; {warnings} warning(s); {out}: {state}")


@cli.command("schema")
@click.argument("name", required=False,
                type=click.Choice(["domain", "requirement", "domain-request", "common"]))
@click.option("--write", "write_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write every schema file into this folder (for editors).")
@guarded
def schema_command(name: str | None, write_dir: Path | None) -> None:
    """Print a JSON Schema of the input formats, or write them all with --write.

    These are the schemas validation itself uses. Point your editor at them with a first line
    such as:  # yaml-language-server: $schema=schemas/domain.schema.json
    """
    from .schema import SCHEMA_FILES, schema_text

    if write_dir is not None:
        write_dir.mkdir(parents=True, exist_ok=True)
        for stem in SCHEMA_FILES:
            (write_dir / f"{stem}.schema.json").write_text(schema_text(stem), encoding="utf-8")
        click.echo(f"wrote {len(SCHEMA_FILES)} schemas to {write_dir}")
        return
    if name is None:
        raise click.UsageError("name a schema (domain, requirement, domain-request, common) "
                               "or use --write DIR")
    click.echo(schema_text(name), nl=False)


def main() -> None:
    cli(prog_name="meshplan")
