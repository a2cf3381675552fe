"""The ``meshplan`` command line.

Exit codes: 0 ok, 1 input (or environment) problem, 2 usage error, 3 internal bug.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from . import __version__

# Start-up time (issue 14): a command imports the stages it runs when it runs, so that
# `meshplan --version` costs little more than importing click, and `validate` never imports the
# renderer, the verifier, the mesh renderer or jsonschema (only an invalid document needs it).
# tests/test_startup.py guards which modules each command loads.
if TYPE_CHECKING:
    from .cache import RenderCache
    from .diagnostics import Diagnostic

F = TypeVar("F", bound=Callable[..., Any])

REPO_OPTION = click.option(
    "--repo",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path(),
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


def cache_options(command: F) -> F:
    """``--cache-dir`` and ``--no-cache``: the render cache (incremental render)."""
    command = click.option(
        "--no-cache", is_flag=True,
        help="Render everything from scratch and leave the render cache alone.")(command)
    return click.option(
        "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="The render cache, outside the repository: it lets a render redo only what the "
        "inputs changed.  [default: $MESHPLAN_CACHE_DIR, else $XDG_CACHE_HOME/meshplan, else "
        "~/.cache/meshplan]")(command)


def open_cache(cache_dir: Path | None, no_cache: bool) -> RenderCache | None:
    from .cache import RenderCache, default_cache_dir

    if no_cache:
        return None
    return RenderCache.at(cache_dir if cache_dir is not None else default_cache_dir())


def warn_cache_unsaved(reason: str) -> None:
    """The render cache only saves time: a cache that could not be stored is a warning."""
    click.echo(f"meshplan: warning: the render cache was not saved ({reason}); the output is "
               "complete, the next run starts afresh (--cache-dir chooses another folder, "
               "--no-cache uses none)", err=True)


def progress(message: str) -> None:
    """A line saying what long work is under way; on a terminal only (logs get the summary)."""
    if sys.stderr.isatty():
        click.echo(f"meshplan: {message}", err=True)


def print_diagnostics(diagnostics: Iterable[Diagnostic], *, quiet_notices: bool = False) -> None:
    from .diagnostics import Severity

    for diagnostic in diagnostics:
        if quiet_notices and diagnostic.severity is Severity.NOTICE:
            continue
        click.echo(diagnostic.format_text(), err=True)


def diagnostics_json(diagnostics: tuple[Diagnostic, ...], ok: bool) -> str:
    import json

    from .diagnostics import Severity

    counts = {s.value: sum(d.severity is s for d in diagnostics) for s in Severity}
    return json.dumps(
        {"ok": ok, "counts": counts, "diagnostics": [d.to_json() for d in diagnostics]},
        indent=2,
        sort_keys=True,
    )


def guarded(command: F) -> F:
    """Turn meshplan errors into exit codes; anything unexpected is a bug (exit 3)."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        from .diagnostics import InputError, MeshplanError

        try:
            code = command(*args, **kwargs)
        except InputError as exc:
            print_diagnostics(exc.diagnostics)
            click.echo(f"meshplan: {exc}", err=True)
            return exc.exit_code
        except MeshplanError as exc:
            click.echo(f"meshplan: {exc}", err=True)
            return exc.exit_code
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            click.echo(f"meshplan: internal error: {type(exc).__name__}: {exc}", err=True)
            if os.environ.get("MESHPLAN_DEBUG"):
                import traceback

                traceback.print_exc()
            else:
                click.echo("This is a bug in meshplan. Re-run with MESHPLAN_DEBUG=1 for the "
                           "traceback and report it.", err=True)
            return 3
        return 0 if code is None else int(code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshplan")
def cli() -> None:
    """meshplan: cross-cluster Cilium policies, Services and Namespaces from requirements.

    Reads inventory/ (domains, clusters, services) and requirements/<domain>/ (who may talk to
    whom) from a git repository and renders one Kustomize directory per cluster.
    """


@cli.result_callback()
def exit_with(code: int | None, **_options: Any) -> None:
    """A command returns its exit code; leave with it (click would exit 0 on a return)."""
    click.get_current_context().exit(code or 0)


@cli.command("validate")
@REPO_OPTION
@FORMAT_OPTION
@guarded
def validate_command(repo: Path, output_format: str) -> int:
    """Check the inventory and requirements; report every problem with file:line:col.

    Exit 0 when valid (warnings allowed), 1 when there are errors.
    """
    from .diagnostics import Severity
    from .pipeline import validate

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
    return 0 if ok else 1


@cli.command("render")
@REPO_OPTION
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder.  [default: <repo>/rendered]")
@click.option("--check", is_flag=True,
              help="Render to memory and exit 1 if the output folder differs (CI drift check).")
@cache_options
@guarded
def render_command(repo: Path, out: Path | None, check: bool, cache_dir: Path | None,
                   no_cache: bool) -> int:
    """Validate, refine and write one Kustomize directory per cluster.

    The new output folder is swapped in whole, at once (never a partly written tree), and
    only if something changed. The render cache (see --cache-dir) lets a render redo only
    what changed since the last one, and keeps the folder swapped out to write the next one
    in; the output is byte for byte that of a full render, and a cache that does not check
    out is ignored.
    """
    from .diagnostics import Severity
    from .outputs import DEFAULT_OUTPUT_DIR
    from .pipeline import render_cached, render_repository
    from .write import diff_against, write_tree

    out = out if out is not None else repo / DEFAULT_OUTPUT_DIR
    progress(f"reading, checking and refining {repo} ...")
    cache = open_cache(cache_dir, no_cache)
    keep = _kept_until_exit()
    if cache is None:
        rendered, diagnostics = render_repository(repo, keep=keep)
    else:
        cached = render_cached(repo, cache, keep=keep)
        rendered, diagnostics = cached.rendered, cached.diagnostics
        progress(f"render cache: {cached.mode}" + (
            f"; {cached.reanalysed} requirement file(s) analysed, {cached.rerendered} "
            "cluster(s) rendered" if cached.mode == "incremental" else ""))
        if cached.unsaved is not None:
            warn_cache_unsaved(cached.unsaved)
        if keep is not None:
            keep.append(cached)
        del cached  # its model and blobs: not needed to write (peak memory)
    print_diagnostics(diagnostics)
    warnings = sum(d.severity is Severity.WARNING for d in diagnostics)
    if check:
        drift = diff_against(out, rendered.files)
        if drift.unchanged:
            click.echo(f"up to date: {out}")
            return 0
        for path in drift.changed:
            click.echo(f"differs: {out / path}")
        for path in drift.removed:
            click.echo(f"not generated any more: {out / path}")
        click.echo(f"{out} is out of date: run `meshplan render`", err=True)
        return 1
    result = write_tree(out, rendered.files,
                        spares=None if cache is None else cache.root / "spares")
    s = rendered.summary
    state = ("unchanged" if result.unchanged
             else f"{len(result.changed)} file(s) written, {len(result.removed)} removed")
    click.echo(f"rendered {s.clusters} cluster(s): {s.policies} policies, {s.services} services, "
               f"{s.namespaces} namespaces; {warnings} warning(s); {out}: {state}")
    return 0


@cli.command("schema")
@click.argument("name", required=False,
                type=click.Choice(["domain", "requirement", "domain-request", "common", "gitops",
                                   "mesh"]))
@click.option("--write", "write_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write every schema file into this folder (for editors).")
@guarded
def schema_command(name: str | None, write_dir: Path | None) -> int:
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
        return 0
    if name is None:
        raise click.UsageError("name a schema (domain, requirement, domain-request, common, "
                               "gitops, mesh) or use --write DIR")
    click.echo(schema_text(name), nl=False)
    return 0


@cli.command("publish")
@REPO_OPTION
@click.option("--branch", default=None,
              help="Output branch.  [default: spec.branch of the GitOps document, else rendered]")
@click.option("--remote", default="origin", show_default=True,
              help="Remote to push the output branch to (and to fetch it from).")
@click.option("--push/--no-push", default=False, show_default=True,
              help="Push the output branch (never forced), or only update it locally.")
@click.option("--allow-dirty", is_flag=True,
              help="Publish even if inputs differ from the checked-out commit (marked dirty).")
@guarded
def publish_command(repo: Path, branch: str | None, remote: str, push: bool,
                    allow_dirty: bool) -> int:
    """Commit the output of the checked-out commit to the output branch (and push it).

    The root of the output branch gets exactly what `meshplan render` writes to rendered/, plus
    hydrator.metadata naming the source commit. Your working tree and branch are not touched.
    No commit when the output did not change; a source commit older than the one already
    published is refused. Exit 0 published or up to date, 1 refused or git failed.
    """
    from .outputs import clusters_of
    from .pipeline import publish_repository
    from .publish import PublishOptions

    progress("rendering the checked-out commit and publishing it ...")
    result = publish_repository(PublishOptions(repo, branch=branch, remote=remote, push=push,
                                    allow_dirty=allow_dirty))
    print_diagnostics(result.diagnostics, quiet_notices=True)
    for note in result.notes:
        click.echo(f"meshplan: {note}", err=True)
    source = f"{result.source.short} \"{result.source.subject}\""
    if result.status == "unchanged":
        click.echo(f"up to date: branch {result.branch} ({result.commit[:12]}) already holds "
                   f"this output; no commit made (source {source})")
        return 0
    clusters = clusters_of(result.changed)
    where = f"pushed to {remote}" if result.pushed else "local only (use --push to push)"
    click.echo(f"published {source} to branch {result.branch}: commit {result.commit[:12]}, "
               f"{len(result.changed)} file(s) changed in {len(clusters)} cluster(s); {where}")
    return 0


@cli.command("diff")
@REPO_OPTION
@click.option("--base", default="HEAD", show_default=True,
              help="Git ref to compare the working tree with (e.g. origin/main).")
@click.option("--format", "output_format", type=click.Choice(["text", "markdown"]),
              default="text", show_default=True,
              help="text for terminals, markdown for PR comments and $GITHUB_STEP_SUMMARY.")
@click.option("--exit-code", is_flag=True, help="Exit 1 when the rendered output changes.")
@cache_options
@guarded
def diff_command(repo: Path, base: str, output_format: str, exit_code: bool,
                 cache_dir: Path | None, no_cache: bool) -> int:
    """Show, per cluster, the objects a change adds, removes and changes.

    Renders BASE (in a temporary git worktree) and the working tree and compares them object
    by object (with the render cache: the base from the last base compared, the working tree
    from the base, each redoing only what changed), with a unified diff of each changed object
    and a summary table. Exit 0 whether or not there are changes (1 with --exit-code when
    there are), 1 on invalid inputs.
    """
    from .diagnostics import Severity
    from .gitdiff import format_markdown, format_text
    from .pipeline import diff_repository

    progress(f"rendering {base} and the working tree ...")
    report, diagnostics = diff_repository(repo, base, with_flows=output_format == "markdown",
                                          cache=open_cache(cache_dir, no_cache),
                                          unsaved=warn_cache_unsaved)
    print_diagnostics(diagnostics, quiet_notices=True)
    if report.base_note:
        for problem in report.base_diagnostics:
            if problem.severity is Severity.ERROR:
                click.echo(f"base {base}: {problem.format_text()}", err=True)
        click.echo(f"meshplan: note: {report.base_note}", err=True)
    click.echo(format_markdown(report) if output_format == "markdown" else format_text(report),
               nl=False)
    return 1 if exit_code and report.has_changes else 0


RENDERED_OPTION = click.option(
    "--rendered", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="The rendered output to read.  [default: <repo>/rendered]")


@cli.command("verify")
@REPO_OPTION
@RENDERED_OPTION
@FORMAT_OPTION
@click.option("--no-cache", is_flag=True,
              help="Read every rendered file afresh and leave the cache alone.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The cache, outside the repository: it keeps the documents of rendered "
              "files it has read, each used only when it writes back to exactly the file's "
              "bytes.  [default: $MESHPLAN_CACHE_DIR, else $XDG_CACHE_HOME/meshplan, else "
              "~/.cache/meshplan]")
@guarded
def verify_command(repo: Path, rendered: Path | None, output_format: str,
                   cache_dir: Path | None, no_cache: bool) -> int:
    """Check that the rendered policies allow exactly what the requirements intend.

    Evaluates the rendered Cilium policies with Cilium's semantics over every service, raw-label
    client and CIDR of the inventory, and compares with the requirements: each flow allowed but
    not intended, or intended but blocked, is reported with the requirement line responsible,
    as is an egress-restricted pod that cannot reach kube-dns. Half-open intents across domains
    are warnings. Exit 0 when output and requirements agree, 1 otherwise or on invalid inputs.
    """
    from .diagnostics import Severity
    from .pipeline import verify_repository

    progress("evaluating the rendered policies against the requirements ...")
    keep = _kept_until_exit()
    report = verify_repository(repo, rendered, open_cache(cache_dir, no_cache), keep=keep)
    if keep is not None:
        keep.append(report)  # its models: freed object by object, half a second at L
    if output_format == "json":
        click.echo(diagnostics_json(report.diagnostics, report.ok))
    else:
        print_diagnostics(report.diagnostics)
        warnings = sum(d.severity is Severity.WARNING for d in report.diagnostics)
        errors = sum(d.severity is Severity.ERROR for d in report.diagnostics)
        # No count of allowed flows: that is every pair of endpoints, which verify (by
        # classes of endpoints) never enumerates; `meshplan graph` draws them.
        what = f"{len(report.endpoints)} endpoint(s), {report.policies} policies"
        if report.ok:
            click.echo(f"verified: the rendered output allows what the requirements intend "
                       f"({what}); {warnings} warning(s)")
        else:
            click.echo(f"verify failed: {errors} problem(s), {len(report.mismatches)} flow "
                       f"mismatch(es) ({what}); {warnings} warning(s)", err=True)
    return 0 if report.ok else 1


@cli.command("graph")
@REPO_OPTION
@RENDERED_OPTION
@click.option("--format", "output_format", type=click.Choice(["mermaid", "dot", "html", "table"]),
              default="mermaid", show_default=True,
              help="mermaid (GitHub renders it), dot (Graphviz), html (one offline page), table.")
@click.option("--domain", default=None, help="Only flows to or from this domain.")
@click.option("--cluster", default=None,
              help="Only flows to or from this cluster (its name, or domain/name).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of standard output.")
@guarded
def graph_command(repo: Path, rendered: Path | None, output_format: str, domain: str | None,
                  cluster: str | None, out: Path | None) -> int:
    """Draw the service-level connectivity the rendered output allows.

    Clusters are groups, services nodes, allowed flows edges labelled with their ports. Only
    flows a policy decides are drawn; endpoints no policy restricts are marked instead.
    """
    from .diagnostics import UsageError
    from .graph import connectivity_graph, render_graph
    from .pipeline import verify_repository

    progress("evaluating the rendered policies against the requirements ...")
    report = verify_repository(repo, rendered)
    domains = {e.domain for e in report.endpoints if e.is_pod}
    clusters = {c for e in report.endpoints if e.is_pod
                for c in (e.cluster, f"{e.domain}/{e.cluster}")}
    if domain is not None and domain not in domains:
        raise UsageError(f"--domain: expected one of {', '.join(sorted(domains))}, "
                         f"found '{domain}'")
    if cluster is not None and cluster not in clusters:
        raise UsageError(f"--cluster: expected a cluster name or domain/name of the "
                         f"inventory, found '{cluster}'")
    if not report.ok:
        click.echo("meshplan: note: `meshplan verify` reports problems with this output; the "
                   "graph shows what it allows as it is", err=True)
    graph = connectivity_graph(report, domain=domain, cluster=cluster)
    text = render_graph(graph, output_format)  # type: ignore[arg-type]
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out} ({len(graph.nodes)} endpoint(s), {len(graph.edges)} flow(s))",
                   err=True)
    return 0


@cli.group("mesh")
def mesh_group() -> None:
    """The mesh plan (a kind: Mesh document): Cilium ClusterMesh and Istio multi-primary.

    `meshplan render` writes the mesh's Helm values under rendered/mesh/; see docs/mesh.md.
    """


@mesh_group.command("propose-ids")
@REPO_OPTION
@click.option("--format", "output_format", type=click.Choice(["patch", "text"]),
              default="patch", show_default=True,
              help="patch: a unified diff for `git apply` adding meshId to the inventory; "
                   "text: one line per proposal, file:line:col first.")
@guarded
def propose_ids_command(repo: Path, output_format: str) -> int:
    """Propose Cilium cluster IDs (meshId) for ClusterMesh members that have none.

    Never changes an assigned ID (changing a running cluster's ID restarts all its
    workloads). Each proposal is the smallest ID from 1 to maxConnectedClusters (255 or 511)
    not used by the clusters the member connects to or by their peers, in inventory order:
    with peers: needed, clusters no cluster connects to both of may share an ID. The same
    inputs always give the same proposal. Exit 0 with a proposal (or nothing to do), 1 on
    invalid inputs or when the ID space is exhausted.
    """
    from .mesh.ids import proposal_lines, proposal_patch
    from .pipeline import propose_mesh_ids

    proposals = propose_mesh_ids(repo)
    if proposals is None:
        click.echo("meshplan: nothing to propose: no Mesh document with spec.cilium", err=True)
        return 0
    if not proposals:
        click.echo("meshplan: every ClusterMesh member has an id; nothing to propose", err=True)
        return 0
    if output_format == "text":
        click.echo("\n".join(proposal_lines(proposals)))
        return 0
    files = {p.cluster.location.file for p in proposals}
    texts = {f: (repo / f).read_text(encoding="utf-8") for f in files}
    patch, skipped = proposal_patch(proposals, texts)
    click.echo(patch, nl=False)
    for line in proposal_lines(skipped):
        click.echo(f"meshplan: not in the patch (flow-style entry), add by hand: {line}",
                   err=True)
    return 0


def _kept_until_exit() -> list[object] | None:
    """The list a command hands what it is done with to, instead of freeing it, when the
    process ends as soon as the command returns (:func:`run` passes it to :func:`main`, which
    gives it to click as the context's ``obj``); None when the command line runs in a process
    that goes on afterwards (tests, ``main(argv)``)."""
    context = click.get_current_context(silent=True)
    kept = context.find_root().obj if context is not None else None
    return kept if isinstance(kept, list) else None


def run() -> NoReturn:
    """The ``meshplan`` console script and ``python -m meshplan``: :func:`main` on the
    process's arguments, then the process ends at once (``os._exit``, after flushing its
    output), without freeing, object by object, the millions of objects a large render made
    (half a second at a thousand clusters, for memory the system takes back whole anyway):
    the commands keep their models and plans until then instead of freeing them as they go.
    """
    code = main(keep=[])
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # e.g. a closed pipe: leave the way Python does, saying so
        raise SystemExit(code) from None
    os._exit(code)


def main(argv: Sequence[str] | None = None, *, keep: list[object] | None = None) -> int:
    """Run ``meshplan argv`` (default: the process arguments); the exit code, never an exit.

    0 ok, 1 input (or environment) problem, 2 usage error, 3 internal bug. ``keep``: a list
    the commands hand what they are done with to instead of freeing it (:func:`run`, whose
    process ends right after).
    """
    try:
        code = cli.main(args=None if argv is None else list(argv), prog_name="meshplan",
                        standalone_mode=False, obj=keep)
    except click.ClickException as exc:  # usage errors: click words them (exit 2)
        exc.show()
        return exc.exit_code
    except click.Abort:  # Ctrl-C
        click.echo("Aborted!", err=True)
        return 1
    return code if isinstance(code, int) else 0
