"""``meshplan graph``: Mermaid, DOT, HTML and table pictures of the rendered connectivity.

Real parsers check the formats: Mermaid with mermaid itself (the npm package's
``dist/mermaid.min.js``, run in headless Chromium), DOT with Graphviz ``dot`` (or ``pydot``
when Graphviz is missing), and the HTML page is opened in headless Chromium, which must report
no console error while the page's own script runs. The tools are test-only: each test skips
with the reason when its tool is missing, and fails instead when env ``CI`` is set.

Tools: Debian ``chromium`` and ``graphviz``; mermaid from the npm registry
(``npm ci --prefix .ci/npm`` installs the locked version, or env ``MERMAID_JS`` pointing at
``mermaid.min.js``).
"""

from __future__ import annotations

import html as htmllib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from meshplan.flowdiff import connectivity_changes, mermaid_changes
from meshplan.graph import (
    EXTERNAL,
    connectivity_graph,
    mermaid_text,
    to_dot,
    to_html,
    to_mermaid,
    to_table,
)
from meshplan.pipeline import render_repository, render_with_inventory, validated
from meshplan.verify.report import VerifyReport, verify

from tests.support.browser import CHROMIUM_FLAGS, chromium
from tests.support.ci import missing_tool
from tests.support.cli import run_cli
from tests.support.repos import ISTIO_EXAMPLE, REPO_ROOT, copy_example

DEFAULT_MERMAID = (Path(__file__).resolve().parents[1]
                   / ".ci/npm/node_modules/mermaid/dist/mermaid.min.js")


def missing(what: str) -> None:
    """Skip locally, fail under CI."""
    missing_tool(what)


def mermaid_js() -> Path:
    path = Path(os.environ.get("MERMAID_JS", DEFAULT_MERMAID))
    if not path.is_file():
        missing(f"mermaid.min.js not found at {path}: npm ci --prefix .ci/npm "
                "(or set MERMAID_JS)")
    return path


def dump_dom(page: Path, workdir: Path) -> tuple[str, str]:
    """Open ``page`` in headless Chromium; return (the DOM after scripts ran, stderr)."""
    proc = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={workdir / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000",
         "--allow-file-access-from-files", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line and re.search(r"Uncaught|Error|error", line)]


@pytest.fixture(scope="module")
def report() -> VerifyReport:
    inventory, _ = validated(REPO_ROOT)
    rendered, _ = render_repository(REPO_ROOT)
    return verify(inventory, {f.path: f.content for f in rendered.files})


# --------------------------------------------------------------------------- structure


def test_graph_nodes_and_edges(report: VerifyReport) -> None:
    graph = connectivity_graph(report)
    titles = {n.title for n in graph.nodes}
    assert "domain2/frontend@cl4" in titles and "108.177.16.0/24" in titles
    assert not any("kube-dns" in t for t in titles)
    assert len(graph.edges) == len(report.restricted_flows()) == 16
    assert [g.name for g in graph.groups] == [
        "domain1/cl1", "domain1/cl2", "domain2/cl3", "domain2/cl4", EXTERNAL]
    frontend = next(n for n in graph.nodes if n.title == "domain2/frontend@cl4")
    assert not frontend.open_egress and not frontend.open_ingress
    service3 = next(n for n in graph.nodes if n.title == "domain2/service3@cl3")
    assert service3.open_egress and service3.open_ingress


def test_graph_filters(report: VerifyReport) -> None:
    by_cluster = connectivity_graph(report, cluster="cl3")
    assert {by_cluster.node(e.source).title for e in by_cluster.edges} <= {
        "domain2/rebel-base@cl3", "domain2/service3@cl3", "domain2/cl3:default/name=client"}
    assert len(by_cluster.edges) == 5
    assert connectivity_graph(report, cluster="domain2/cl3").edges == by_cluster.edges
    by_domain = connectivity_graph(report, domain="domain1")
    assert all("domain1/" in by_domain.node(e.source).title
               or "domain1/" in by_domain.node(e.target).title for e in by_domain.edges)
    # all 16 but the three that stay outside domain1: rebel-base and service3 -> frontend,
    # frontend -> the CIDR
    assert len(by_domain.edges) == 13
    assert connectivity_graph(report, domain="domain1", cluster="cl4").edges == ()


def test_table(report: VerifyReport) -> None:
    text = to_table(connectivity_graph(report))
    lines = text.splitlines()
    assert lines[0].split() == ["FROM", "TO", "PORTS"]
    assert any(re.fullmatch(r"domain2/frontend@cl4\s+108\.177\.16\.0/24\s+any", line)
               for line in lines)
    assert "16 flow(s) decided by policies" in text
    assert "egress unrestricted: domain1/service1@cl1" in text


def test_html_is_self_contained_and_escaped(report: VerifyReport) -> None:
    page = to_html(connectivity_graph(report), title="a <b> & c")
    assert "<title>a &lt;b&gt; &amp; c</title>" in page
    outside = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in outside and "https://" not in outside
    assert not re.search(r"""(src|href)\s*=\s*["'][^"'#]""", page)
    assert page.count('class="edge"') == 16


def test_mermaid_text_escaping() -> None:
    assert mermaid_text('a "b" <c> #d') == "a #quot;b#quot; #lt;c#gt; #35;d"


# --------------------------------------------------------------------------- real parsers

MERMAID_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><script src="{script}"></script></head>
<body><pre id="results">pending</pre>
<script type="application/json" id="diagrams">{diagrams}</script>
<script>
(async function () {{
  var out = document.getElementById("results");
  var diagrams = JSON.parse(document.getElementById("diagrams").textContent);
  var results = [];
  mermaid.initialize({{startOnLoad: false, securityLevel: "strict"}});
  for (var i = 0; i < diagrams.length; i++) {{
    try {{
      await mermaid.parse(diagrams[i]);
      var drawn = await mermaid.render("d" + i, diagrams[i]);
      results.push({{ok: true, svg: drawn.svg.length}});
    }} catch (e) {{
      results.push({{ok: false, error: String(e && e.message || e)}});
    }}
  }}
  out.textContent = JSON.stringify(results);
}})();
</script></body></html>
"""


def parse_mermaid(diagrams: Sequence[str], workdir: Path) -> list[dict[str, object]]:
    script = mermaid_js()
    page = workdir / "mermaid.html"
    payload = json.dumps(list(diagrams)).replace("<", "\\u003c")
    page.write_text(MERMAID_PAGE.format(script=script.as_uri(), diagrams=payload), "utf-8")
    dom, _ = dump_dom(page, workdir)
    match = re.search(r'<pre id="results">(.*?)</pre>', dom, re.S)
    assert match is not None, dom[-2000:]
    text = htmllib.unescape(match.group(1))
    assert text != "pending", "mermaid did not finish"
    results: list[dict[str, object]] = json.loads(text)
    return results


def diff_diagram(tmp_path: Path) -> str:
    """The flow picture of a change to the example (the one tests/test_flowdiff.py reads)."""
    before = render_with_inventory(REPO_ROOT)
    root = copy_example(tmp_path / "after")
    (root / "requirements/domain2/allow-domain1.yaml").unlink()
    frontend = root / "requirements/domain2/frontend.yaml"
    frontend.write_text(frontend.read_text().replace("cidr: 108.177.16.0/24",
                                                     "cidr: 108.177.17.0/24"))
    after = render_with_inventory(root)
    return mermaid_changes(connectivity_changes((before[0], before[1].files),
                                                (after[0], after[1].files)))


@pytest.mark.slow
def test_mermaid_parses_with_mermaid(report: VerifyReport, tmp_path: Path) -> None:
    graph = to_mermaid(connectivity_graph(report))
    small = to_mermaid(connectivity_graph(report, cluster="cl3"))
    diff = diff_diagram(tmp_path)
    broken = "flowchart LR\n  a -->|unclosed b\n  subgraph\n"
    results = parse_mermaid([graph, small, diff, broken], tmp_path)
    assert [r["ok"] for r in results] == [True, True, True, False], results
    assert all(int(str(r["svg"])) > 1000 for r in results[:3])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dot_parses_with_graphviz_or_pydot(report: VerifyReport, tmp_path: Path) -> None:
    text = to_dot(connectivity_graph(report))
    broken = "digraph { a -> ; }"
    dot = shutil.which("dot")
    if dot is not None:
        proc = subprocess.run([dot, "-Tsvg"], input=text, capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "<svg" in proc.stdout and "frontend" in proc.stdout
        assert proc.stdout.count('class="edge"') == 16
        assert proc.stdout.count('class="cluster"') == 7  # 2 domains, 4 clusters, external
        bad = subprocess.run([dot, "-Tsvg"], input=broken, capture_output=True, text=True,
                             timeout=60, check=False)
        assert bad.returncode != 0
        return
    try:
        import pydot  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        missing("neither Graphviz `dot` (apt-get install graphviz) nor pydot installed")
    graphs = pydot.graph_from_dot_data(text)
    assert graphs and len(graphs[0].get_edges()) == 16
    with pytest.raises(Exception):  # noqa: B017 - pydot raises its parser's own error type
        assert not pydot.graph_from_dot_data(broken)
        raise ValueError("pydot accepted broken DOT")


# --------------------------------------------------------------------------- the HTML page

CAPTURE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
(function () {
  var original = console.error;
  console.error = function () {
    window.__errors.push(Array.prototype.join.call(arguments, " "));
    original.apply(console, arguments);
  };
}());
window.addEventListener("load", function () {
  var node = document.querySelector(".node");
  var before = document.querySelectorAll("#flows tbody tr:not([hidden])").length;
  if (node) { node.dispatchEvent(new MouseEvent("click", {bubbles: true})); }
  var report = {
    errors: window.__errors,
    ready: document.body.getAttribute("data-ready"),
    rowsBefore: before,
    rowsAfter: document.querySelectorAll("#flows tbody tr:not([hidden])").length,
    highlighted: document.querySelectorAll(".edge.hl").length,
    selected: document.querySelectorAll(".node.selected").length
  };
  var pre = document.createElement("pre");
  pre.id = "test-report";
  pre.textContent = JSON.stringify(report);
  document.body.appendChild(pre);
});
</script>
"""


def open_page(page_html: str, workdir: Path) -> tuple[dict[str, object], list[str]]:
    page = workdir / "page.html"
    page.write_text(page_html.replace("<head>", "<head>\n" + CAPTURE, 1), "utf-8")
    dom, stderr = dump_dom(page, workdir)
    match = re.search(r'<pre id="test-report">(.*?)</pre>', dom, re.S)
    assert match is not None, dom[-2000:]
    result: dict[str, object] = json.loads(htmllib.unescape(match.group(1)))
    return result, console_errors(stderr)


@pytest.mark.slow
def test_html_opens_in_chromium_without_errors(report: VerifyReport, tmp_path: Path) -> None:
    graph = connectivity_graph(report)
    result, logged = open_page(to_html(graph), tmp_path)
    assert result["errors"] == [] and logged == []
    assert result["ready"] == str(len(graph.nodes))
    assert result["rowsBefore"] == 16
    # clicking the first node (backend@cl1) highlights its flows and filters the table
    assert result["selected"] == 1
    assert result["highlighted"] == result["rowsAfter"] == 2


@pytest.mark.slow
def test_html_check_catches_a_broken_page(report: VerifyReport, tmp_path: Path) -> None:
    page = to_html(connectivity_graph(report)).replace(
        'var counts = {', 'undefinedFunction(); var counts = {', 1)
    result, logged = open_page(page, tmp_path)
    assert result["errors"] and result["ready"] is None
    assert logged  # the console log shows it too


@pytest.mark.slow
def test_html_screenshot_has_content(report: VerifyReport, tmp_path: Path) -> None:
    page = tmp_path / "graph.html"
    page.write_text(to_html(connectivity_graph(report)), "utf-8")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1400,900", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and shot.stat().st_size > 20_000


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "html", "table"])
def test_cli_graph_formats(fmt: str, tmp_path: Path) -> None:
    root = copy_example(tmp_path / "repo")
    assert run_cli(["render", "--repo", str(root)])[0] == 0
    code, out, err = run_cli(["graph", "--repo", str(root), "--format", fmt])
    assert code == 0, err
    first = {"mermaid": "flowchart LR", "dot": "digraph meshplan {", "html": "<!DOCTYPE html>",
             "table": "FROM"}[fmt]
    assert out.startswith(first)
    target = tmp_path / f"graph.{fmt}"
    code, out, err = run_cli(["graph", "--repo", str(root), "--format", fmt, "--domain",
                              "domain2", "--cluster", "cl4", "--out", str(target)])
    assert code == 0 and out == "" and target.read_text().startswith(first)
    assert "wrote" in err


def test_cli_graph_usage_errors(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "repo")
    assert run_cli(["render", "--repo", str(root)])[0] == 0
    code, _, err = run_cli(["graph", "--repo", str(root), "--domain", "nope"])
    assert code == 2 and "expected one of domain1, domain2" in err
    code, _, err = run_cli(["graph", "--repo", str(root), "--cluster", "domain9/cl1"])
    assert code == 2
    code, _, _ = run_cli(["graph", "--repo", str(root), "--format", "svg"])
    assert code == 2


def test_cli_graph_notes_a_failing_verify(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_example(Path(tmp) / "repo")
        code, out, err = run_cli(["graph", "--repo", str(root), "--format", "table"])
    assert code == 0 and "`meshplan verify` reports problems" in err
    assert "0 flow(s) decided by policies" in out  # nothing rendered yet: everything open


# --------------------------------------------------------------------------- identity layer


@pytest.fixture(scope="module")
def istio_report() -> VerifyReport:
    root = ISTIO_EXAMPLE
    inventory, _ = validated(root)
    rendered, _ = render_repository(root)
    return verify(inventory, {f.path: f.content for f in rendered.files})


def test_mtls_protected_flows_are_marked_in_every_format(istio_report: VerifyReport) -> None:
    graph = connectivity_graph(istio_report)
    titles = {(graph.node(e.source).title, graph.node(e.target).title): e for e in graph.edges}
    checkout = titles[("boutique/checkoutservice@gcp", "boutique/currencyservice@aks")]
    assert checkout.mtls and checkout.label == "TCP/7000 (mTLS)"
    # the ingress gateway's namespace is not STRICT: reached, but not protected
    assert not titles[("boutique/checkoutservice@gcp",
                       "boutique/aks:istio-system/istio=ingressgateway")].mtls
    assert not any("istio-eastwestgateway" in n.title for n in graph.nodes)  # hops, not nodes
    mermaid = to_mermaid(graph)
    assert re.search(r'n\d+ ==>\|"TCP/7000 \(mTLS\)"\| n\d+', mermaid)
    assert re.search(r'n\d+ -->\|"TCP/any"\| n\d+', mermaid)
    assert 'style=bold, color="#1a7f37"' in to_dot(graph)
    table = to_table(graph).splitlines()
    assert table[0].split() == ["FROM", "TO", "PORTS", "MTLS"]
    assert any(re.fullmatch(r"boutique/checkoutservice@gcp\s+boutique/currencyservice@aks\s+"
                            r"TCP/7000\s+yes", line) for line in table)
    page = to_html(graph)
    assert 'class="edge mtls"' in page and "thick green: mTLS-protected" in page


def test_without_the_identity_layer_nothing_is_marked(report: VerifyReport) -> None:
    graph = connectivity_graph(report)
    assert not any(e.mtls for e in graph.edges)
    assert "==>" not in to_mermaid(graph) and "MTLS" not in to_table(graph)


@pytest.mark.slow
def test_the_istio_graph_parses_with_mermaid_and_graphviz(istio_report: VerifyReport,
                                                          tmp_path: Path) -> None:
    graph = connectivity_graph(istio_report)
    [result] = parse_mermaid([to_mermaid(graph)], tmp_path)
    assert result["ok"] is True, result
    dot = shutil.which("dot")
    if dot is None:
        missing("graphviz (dot) not found: apt-get install -y graphviz")
    proc = subprocess.run([str(dot), "-Tsvg"], input=to_dot(graph), capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('class="edge"') == len(graph.edges)
