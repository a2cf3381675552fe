"""The command line's contract: exit codes, --help everywhere, --version, the bug path."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from meshplan import __version__, cli, pipeline

from tests.support.cli import run_cli


def test_every_command_has_help() -> None:
    commands = sorted(cli.cli.commands)
    assert {"validate", "render", "publish", "diff", "verify", "graph", "schema"} <= set(commands)
    for name in commands:
        code, out, _ = run_cli([name, "--help"])
        assert code == 0 and out.startswith("Usage: ") and f" {name} [OPTIONS]" in out, name


def test_version() -> None:
    code, out, _ = run_cli(["--version"])
    assert code == 0 and out.strip() == f"meshplan, version {__version__}"


@pytest.mark.parametrize("args", [
    ["validate", "--no-such-option"],
    ["render", "--repo", "/no/such/folder"],
    ["no-such-command"],
    ["graph", "--format", "png"],
])
def test_usage_errors_exit_2(args: list[str]) -> None:
    code, _, err = run_cli(args)
    assert code == 2 and "Usage:" in err and "Traceback" not in err


def bug(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("an invariant broke")


def test_an_internal_bug_exits_3_with_a_hint_and_no_traceback(
    example_repo: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline, "validate", bug)  # fault injection: a bug inside the pipeline
    monkeypatch.delenv("MESHPLAN_DEBUG", raising=False)
    code, _, err = run_cli(["validate", "--repo", str(example_repo)])

    assert code == 3
    assert "internal error: RuntimeError: an invariant broke" in err
    assert "This is a bug in meshplan" in err and "MESHPLAN_DEBUG=1" in err
    assert "Traceback" not in err


def test_the_traceback_is_printed_only_when_asked(
    example_repo: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline, "validate", bug)
    monkeypatch.setenv("MESHPLAN_DEBUG", "1")
    code, _, err = run_cli(["validate", "--repo", str(example_repo)])

    assert code == 3
    assert "Traceback" in err and "an invariant broke" in err


def test_input_problems_exit_1_without_a_bug_hint(example_repo: Path) -> None:
    (example_repo / "inventory" / "domain1.yaml").write_text("kind: Domain\n", encoding="utf-8")
    for command in ("validate", "render", "verify"):
        code, out, err = run_cli([command, "--repo", str(example_repo)])
        assert code == 1, command
        assert "bug" not in (out + err).lower() and "Traceback" not in err


@pytest.mark.slow
def test_long_commands_say_what_they_do_on_a_terminal_only(example_repo: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    command = [sys.executable, "-m", "meshplan", "render", "--repo", str(example_repo)]
    leader, follower = pty.openpty()
    try:
        on_terminal = subprocess.run(command, stderr=follower, stdout=subprocess.PIPE,
                                     timeout=60, check=False)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    redirected = subprocess.run(command, capture_output=True, timeout=60, check=False)

    assert on_terminal.returncode == 0 and redirected.returncode == 0
    assert b"meshplan: reading, checking and refining" in seen
    assert b"reading, checking" not in redirected.stderr  # logs and pipes stay quiet


@pytest.mark.slow
def test_the_console_script_exits_with_the_code_main_returns(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(sys.executable).with_name("meshplan")
    assert script.exists(), "the meshplan console script is not installed beside python"
    for args, expected in ((["--version"], 0), (["validate", "--repo", str(tmp_path)], 1),
                           (["validate", "--no-such-option"], 2)):
        proc = subprocess.run([str(script), *args], capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == expected, (args, proc.stderr)


def test_the_process_entry_points_write_all_their_output_before_ending(tmp_path: Path) -> None:
    """``run`` ends the process with os._exit (nothing freed): what was printed, to a pipe
    (block-buffered), and the exit code still arrive whole."""
    import subprocess
    import sys

    code, expected, _ = run_cli(["schema", "domain"])
    assert code == 0 and len(expected) > 8192  # more than one buffer's worth
    script = str(Path(sys.executable).with_name("meshplan"))
    for command in ([script], [sys.executable, "-m", "meshplan"]):
        proc = subprocess.run([*command, "schema", "domain"], capture_output=True, text=True,
                              timeout=60, check=False)
        assert (proc.returncode, proc.stdout) == (0, expected), command
        proc = subprocess.run([*command, "validate", "--repo", str(tmp_path)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 1 and "invalid" in proc.stderr, command


def test_main_returns_the_exit_code_instead_of_exiting(tmp_path: Path) -> None:
    assert cli.main(["--version"]) == 0
    assert cli.main(["validate", "--repo", str(tmp_path)]) == 1
    assert cli.main(["no-such-command"]) == 2


def test_render_hands_its_analysis_to_keep_only_when_given_one(
    example_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``run`` passes (its process ends right after) keeps the analysis alive; a plain
    ``main(argv)`` (a process that goes on) keeps nothing."""
    handed: list[list[object] | None] = []
    real = cli._kept_until_exit

    def spy() -> list[object] | None:
        handed.append(real())
        return handed[-1]

    monkeypatch.setattr(cli, "_kept_until_exit", spy)
    kept: list[object] = []
    args = ["render", "--repo", str(example_repo), "--no-cache"]
    assert cli.main([*args, "--out", str(tmp_path / "kept")], keep=kept) == 0
    assert any(isinstance(item, pipeline.Analysis) for item in kept)
    assert handed == [kept]
    assert cli.main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert handed == [kept, None]  # inside the command, with nothing to hand to


def test_verify_hands_its_report_and_inventory_to_keep_only_when_given_one(
    example_repo: Path, tmp_path: Path,
) -> None:
    """As for render: what ``run`` passes keeps verify's report and validated inventory alive
    (freeing them object by object is half a second at a thousand clusters), with the same
    answer as a plain ``main(argv)``, which keeps nothing."""
    from meshplan.model import Inventory
    from meshplan.verify.report import VerifyReport

    rendered = tmp_path / "rendered"
    assert cli.main(["render", "--repo", str(example_repo), "--out", str(rendered),
                     "--no-cache"]) == 0
    args = ["verify", "--repo", str(example_repo), "--rendered", str(rendered), "--no-cache",
            "--format", "json"]
    code, plain, err = run_cli(args)
    assert code == 0, err
    kept: list[object] = []
    with CliRunner().isolation() as (out, _, _):
        assert cli.main(args, keep=kept) == 0
    assert out.getvalue().decode() == plain
    assert [type(item) for item in kept if isinstance(item, (Inventory, VerifyReport))] == [
        Inventory, VerifyReport]


def test_a_cache_that_cannot_be_saved_warns_and_the_render_stands(
    example_repo: Path, tmp_path: Path,
) -> None:
    """The render cache only saves time: a cache folder that cannot be made (here under a
    plain file; a full disk alike) is a warning, not an internal error (once exit 3)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["render", "--repo", str(example_repo), "--out", str(out),
                                 "--cache-dir", str(blocker / "cache")])
    assert code == 0, err
    assert "the render cache was not saved" in err and "internal error" not in err
    expected = tmp_path / "expected"
    assert run_cli(["render", "--repo", str(example_repo), "--out", str(expected),
                    "--no-cache"])[0] == 0
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == sorted(
        p.relative_to(expected) for p in expected.rglob("*"))
    assert "rendered" in stdout
