"""`python -m sandbox.tenant`: a person can act on the sandbox as its admins would, without writing code."""

from __future__ import annotations

from sandbox.server import SandboxServer
from sandbox.tenant import main


def _env_file(sandbox: SandboxServer, tmp_path) -> str:
    path = tmp_path / "sandbox.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in sandbox.env().items()))
    return str(path)


def test_disable_without_a_name_picks_a_member_present_in_salesforce_and_disables_it_through_graph(
    sandbox: SandboxServer, tmp_path, capsys
):
    assert main(["--env-file", _env_file(sandbox, tmp_path), "disable", "--wait", "0"]) == 0
    out = capsys.readouterr().out
    upn = out.split()[1]
    with sandbox.state.lock:
        user = next(u for u in sandbox.state.directory.users.values() if u["userPrincipalName"] == upn)
    assert user["accountEnabled"] is False
    assert "Salesforce user still active after 0 s (is idsync running?" in out  # nothing runs idsync here
    assert "Entra accountEnabled=False; Salesforce IsActive=True" in out


def test_enable_and_show_report_both_sides(sandbox: SandboxServer, tmp_path, capsys):
    env_file = _env_file(sandbox, tmp_path)
    with sandbox.state.lock:
        upn = next(u["userPrincipalName"] for u in sandbox.state.directory.users.values() if u["accountEnabled"])
    assert main(["--env-file", env_file, "enable", upn]) == 0
    assert main(["--env-file", env_file, "show", upn]) == 0
    assert f"{upn}: Entra accountEnabled=True" in capsys.readouterr().out


def test_a_missing_env_file_says_how_to_start_the_sandbox(tmp_path, capsys):
    assert main(["--env-file", str(tmp_path / "nope.env"), "list"]) == 2
    assert "make run" in capsys.readouterr().err
