"""The `corral` client commands against a real server: run, agents, environments, sessions, logs, apply."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import pytest

from tests.e2e.conftest import cli, corral_cli
from tests.support.fake_model import FakeModel
from tests.support.server import CorralServer, free_port


def _json(output: str) -> object:
    return json.loads(output)


def _make_session(client: anthropic.Anthropic) -> str:
    agent = client.beta.agents.create(
        name="logged", model="claude-sonnet-4-6", tools=[{"type": "agent_toolset_20260401"}]
    )
    environment = client.beta.environments.create(name="logged-env")
    return client.beta.sessions.create(agent=agent.id, environment_id=environment.id).id


def _run_turn(client: anthropic.Anthropic, session_id: str, text: str) -> None:
    with client.beta.sessions.events.stream(session_id) as stream:
        client.beta.sessions.events.send(
            session_id, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
        )
        for event in stream:
            if event.type == "session.status_idle":
                return


# --- run -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_from_a_fresh_shell_shows_the_tool_call_its_output_and_the_reply(
    server: CorralServer, api_key: str
) -> None:
    result = corral_cli(server.url, api_key, "run", "bash: echo run-marker-$((40 + 2))")

    assert result.returncode == 0, result.stderr
    assert "⏺ bash  echo run-marker-$((40 + 2))" in result.stdout
    assert "run-marker-42" in result.stdout  # the tool's output
    assert "done: run-marker-42" in result.stdout  # the agent's reply after the tool result
    assert "idle: end_turn" in result.stdout
    assert "Traceback" not in result.stderr


def test_run_creates_its_agent_and_environment_once_and_reuses_them(server: CorralServer, api_key: str) -> None:
    assert cli(server, api_key, "run", "first").exit_code == 0
    assert cli(server, api_key, "run", "second").exit_code == 0

    agents = _json(cli(server, api_key, "agents", "list", "--json").stdout)
    environments = _json(cli(server, api_key, "environments", "list", "--json").stdout)
    sessions = _json(cli(server, api_key, "sessions", "list", "--json").stdout)
    assert [agent["name"] for agent in agents] == ["corral-run"]  # type: ignore[index, union-attr]
    assert [environment["name"] for environment in environments] == ["corral-run"]  # type: ignore[index, union-attr]
    assert len(sessions) == 2  # type: ignore[arg-type]


def test_run_prints_the_agent_reply(server: CorralServer, api_key: str) -> None:
    result = cli(server, api_key, "run", "hello there")

    assert result.exit_code == 0, result.output
    assert "echo: hello there" in result.stdout


def test_run_with_json_prints_the_session_then_one_event_per_line_until_idle(
    server: CorralServer, api_key: str
) -> None:
    result = cli(server, api_key, "run", "--json", "hello json")

    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["type"] == "session"
    assert "agent.message" in [line["type"] for line in lines]
    assert lines[-1]["type"] == "session.status_idle"


def test_run_with_model_and_system_overrides_them_for_the_new_session_only(
    server: CorralServer, api_key: str, fake_model: FakeModel
) -> None:
    result = cli(server, api_key, "run", "--json", "--model", "claude-opus-4-6", "--system", "Be terse.", "hi")

    session = json.loads(result.stdout.splitlines()[0])
    assert session["agent"]["model"]["id"] == "claude-opus-4-6"
    assert session["agent"]["system"] == "Be terse."
    assert fake_model.requests[-1]["body"]["model"] == "claude-opus-4-6"
    agent = _json(cli(server, api_key, "agents", "get", session["agent"]["id"], "--json").stdout)
    assert agent["system"] is None  # type: ignore[index]


def test_run_with_session_continues_that_session(server: CorralServer, api_key: str) -> None:
    first = cli(server, api_key, "run", "--json", "remember this")
    session_id = json.loads(first.stdout.splitlines()[0])["id"]

    second = cli(server, api_key, "run", "--session", session_id, "and this")

    assert second.exit_code == 0, second.output
    assert "echo: and this" in second.stdout
    assert len(_json(cli(server, api_key, "sessions", "list", "--json").stdout)) == 1  # type: ignore[arg-type]


def test_run_fails_with_status_1_when_the_model_keeps_failing(
    server: CorralServer, api_key: str, fake_model: FakeModel
) -> None:
    fake_model.script({"status": 400, "error_type": "invalid_request_error", "message": "prompt is too long"})

    result = cli(server, api_key, "run", "too long")

    assert result.exit_code == 1
    assert "prompt is too long" in result.stdout
    assert "the turn failed" in result.stderr


def test_run_stops_with_status_3_at_a_call_it_cannot_confirm_without_a_terminal(
    server: CorralServer, api_key: str, client: anthropic.Anthropic
) -> None:
    agent = client.beta.agents.create(
        name="careful",
        model="claude-sonnet-4-6",
        tools=[{"type": "agent_toolset_20260401", "default_config": {"permission_policy": {"type": "always_ask"}}}],
    )

    result = cli(server, api_key, "run", "--agent", agent.id, "bash: echo needs approval")

    assert result.exit_code == 3
    assert "needs confirmation" in result.stdout
    assert "waits for an answer to a tool call" in result.stderr


# --- agents, environments, sessions ---------------------------------------------------------------------


def test_agents_create_list_get_and_archive(server: CorralServer, api_key: str) -> None:
    created = _json(cli(server, api_key, "agents", "create", "helper", "--system", "Be kind.", "--json").stdout)
    agent_id = created["id"]  # type: ignore[index]

    listed = cli(server, api_key, "agents", "list")
    shown = _json(cli(server, api_key, "agents", "get", agent_id, "--json").stdout)
    archived = cli(server, api_key, "agents", "archive", agent_id)
    after = _json(cli(server, api_key, "agents", "list", "--json").stdout)

    assert agent_id in listed.stdout and "helper" in listed.stdout
    assert shown["system"] == "Be kind."  # type: ignore[index]
    assert archived.exit_code == 0 and f"archived agent {agent_id}" in archived.stdout
    assert after == []


def test_agents_get_with_versions_lists_every_version(
    server: CorralServer, api_key: str, client: anthropic.Anthropic
) -> None:
    agent = client.beta.agents.create(name="versioned", model="claude-sonnet-4-6")
    client.beta.agents.update(agent.id, version=1, system="v2 prompt")

    shown = _json(cli(server, api_key, "agents", "get", agent.id, "--versions", "--json").stdout)

    assert sorted(version["version"] for version in shown["versions"]) == [1, 2]  # type: ignore[index]


def test_environments_create_list_get_and_archive(server: CorralServer, api_key: str) -> None:
    created = _json(
        cli(server, api_key, "environments", "create", "web", "--allow-host", "example.com", "--json").stdout
    )
    environment_id = created["id"]  # type: ignore[index]

    listed = cli(server, api_key, "environments", "list")
    shown = _json(cli(server, api_key, "environments", "get", environment_id, "--json").stdout)
    cli(server, api_key, "environments", "archive", environment_id)
    after = _json(cli(server, api_key, "environments", "list", "--json").stdout)

    assert "limited (example.com)" in listed.stdout
    assert shown["config"]["networking"]["allowed_hosts"] == ["example.com"]  # type: ignore[index]
    assert after == []


def test_sessions_list_shows_status_and_token_usage(server: CorralServer, api_key: str) -> None:
    cli(server, api_key, "run", "count my tokens")

    listed = cli(server, api_key, "sessions", "list")
    (session,) = _json(cli(server, api_key, "sessions", "list", "--json").stdout)  # type: ignore[misc]

    assert session["status"] == "idle"
    usage = session["usage"]
    assert f"{usage['input_tokens']}/{usage['output_tokens']}" in listed.stdout
    assert "idle" in listed.stdout


def test_sessions_create_get_and_archive(server: CorralServer, api_key: str, client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(name="a", model="claude-sonnet-4-6")
    environment = client.beta.environments.create(name="e")
    created = _json(
        cli(
            server,
            api_key,
            "sessions",
            "create",
            "--agent",
            agent.id,
            "--environment",
            environment.id,
            "--title",
            "by the cli",
            "--json",
        ).stdout
    )
    session_id = created["id"]  # type: ignore[index]

    shown = cli(server, api_key, "sessions", "get", session_id)
    cli(server, api_key, "sessions", "archive", session_id)

    assert "by the cli" in shown.stdout
    assert client.beta.sessions.retrieve(session_id).archived_at is not None


# --- logs ----------------------------------------------------------------------------------------------


def test_logs_prints_a_sessions_history(server: CorralServer, api_key: str, client: anthropic.Anthropic) -> None:
    session_id = _make_session(client)
    _run_turn(client, session_id, "bash: echo logged-line")

    result = cli(server, api_key, "sessions", "logs", session_id)

    assert result.exit_code == 0, result.output
    assert "> bash: echo logged-line" in result.stdout
    assert "⏺ bash  echo logged-line" in result.stdout
    assert "done: logged-line" in result.stdout
    assert "idle: end_turn" in result.stdout


def test_logs_json_prints_every_event_as_a_line(
    server: CorralServer, api_key: str, client: anthropic.Anthropic
) -> None:
    session_id = _make_session(client)
    _run_turn(client, session_id, "one line each")

    result = cli(server, api_key, "sessions", "logs", session_id, "--json")

    types = [json.loads(line)["type"] for line in result.stdout.splitlines()]
    assert types[0] == "user.message"
    assert types[-1] == "session.status_idle"


@pytest.mark.slow
def test_logs_follow_prints_live_events_and_ends_when_the_session_goes_idle(
    server: CorralServer, api_key: str, client: anthropic.Anthropic, fake_model: FakeModel
) -> None:
    session_id = _make_session(client)
    # The model answers after a few seconds, so `logs -f` starts while the turn runs.
    fake_model.script({"match": "slow-follow", "delay": 3, "text": "finally done"})
    with client.beta.sessions.events.stream(session_id) as stream:
        client.beta.sessions.events.send(
            session_id, events=[{"type": "user.message", "content": [{"type": "text", "text": "slow-follow"}]}]
        )
        for event in stream:
            if event.type == "session.status_running":
                break

    result = corral_cli(server.url, api_key, "sessions", "logs", "-f", session_id, timeout=60)

    assert result.returncode == 0, result.stderr
    assert "finally done" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("── idle: end_turn")


def test_logs_follow_of_an_idle_session_prints_its_history_and_ends(
    server: CorralServer, api_key: str, client: anthropic.Anthropic
) -> None:
    session_id = _make_session(client)
    _run_turn(client, session_id, "already over")

    result = cli(server, api_key, "sessions", "logs", "-f", session_id)

    assert result.exit_code == 0
    assert "echo: already over" in result.stdout


# --- apply ---------------------------------------------------------------------------------------------

SPEC = """\
environments:
  - name: reviewer-env
    config: {type: cloud, networking: {type: unrestricted}}
agents:
  - name: reviewer
    model: claude-sonnet-4-6
    system: You review code.
    tools: [{type: agent_toolset_20260401}]
    metadata: {team: platform}
"""


def _apply(server: CorralServer, api_key: str, tmp_path: Path, text: str) -> list[dict[str, object]]:
    path = tmp_path / "corral.yaml"
    path.write_text(text)
    result = cli(server, api_key, "apply", str(path), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_apply_creates_what_the_file_declares(
    server: CorralServer, api_key: str, client: anthropic.Anthropic, tmp_path: Path
) -> None:
    results = _apply(server, api_key, tmp_path, SPEC)

    assert [(r["kind"], r["name"], r["action"]) for r in results] == [
        ("environment", "reviewer-env", "created"),
        ("agent", "reviewer", "created"),
    ]
    (agent,) = client.beta.agents.list()
    assert agent.system == "You review code." and agent.metadata == {"team": "platform"}
    (environment,) = client.beta.environments.list()
    assert environment.config.networking.type == "unrestricted"  # type: ignore[union-attr]


def test_applying_the_same_file_again_changes_nothing(
    server: CorralServer, api_key: str, client: anthropic.Anthropic, tmp_path: Path
) -> None:
    _apply(server, api_key, tmp_path, SPEC)
    environment_updated_at = next(iter(client.beta.environments.list())).updated_at

    results = _apply(server, api_key, tmp_path, SPEC)

    assert [r["action"] for r in results] == ["unchanged", "unchanged"]
    (agent,) = client.beta.agents.list()
    assert agent.version == 1
    assert next(iter(client.beta.environments.list())).updated_at == environment_updated_at


def test_apply_makes_a_new_agent_version_when_a_field_changed(
    server: CorralServer, api_key: str, client: anthropic.Anthropic, tmp_path: Path
) -> None:
    _apply(server, api_key, tmp_path, SPEC)

    results = _apply(server, api_key, tmp_path, SPEC.replace("You review code.", "You review code. Be direct."))

    assert [r["action"] for r in results] == ["unchanged", "updated"]
    (agent,) = client.beta.agents.list()
    assert agent.version == 2 and agent.system == "You review code. Be direct."


def test_apply_clears_what_the_file_no_longer_declares(
    server: CorralServer, api_key: str, client: anthropic.Anthropic, tmp_path: Path
) -> None:
    _apply(server, api_key, tmp_path, SPEC)

    _apply(server, api_key, tmp_path, SPEC.replace("    metadata: {team: platform}\n", ""))

    (agent,) = client.beta.agents.list()
    assert agent.metadata == {}


def test_apply_updates_an_environment_whose_config_changed(
    server: CorralServer, api_key: str, client: anthropic.Anthropic, tmp_path: Path
) -> None:
    _apply(server, api_key, tmp_path, SPEC)
    limited = SPEC.replace("{type: unrestricted}", "{type: limited, allowed_hosts: [pypi.org]}")

    results = _apply(server, api_key, tmp_path, limited)

    assert results[0]["action"] == "updated"
    (environment,) = client.beta.environments.list()
    assert environment.config.networking.allowed_hosts == ["pypi.org"]  # type: ignore[union-attr]


def test_apply_refuses_a_file_with_unknown_keys_before_changing_anything(
    server: CorralServer, api_key: str, client: anthropic.Anthropic, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SPEC + "    temperature: 0.2\n")

    result = cli(server, api_key, "apply", str(path))

    assert result.exit_code == 1
    assert "unknown keys temperature" in result.stderr
    assert list(client.beta.environments.list()) == []


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_unreachable_server_is_one_clear_line(api_key: str) -> None:
    result = corral_cli(f"http://127.0.0.1:{free_port()}", api_key, "agents", "list")

    assert result.returncode == 1
    assert "cannot reach the Corral server at http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_rejected_key_says_so(server: CorralServer) -> None:
    result = cli(server, "sk-corral-not-a-real-key", "sessions", "list")

    assert result.exit_code == 1
    assert "rejected the API key" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_missing_key_says_how_to_set_one(server: CorralServer) -> None:
    result = cli(server, None, "agents", "list")

    assert result.exit_code == 1
    assert "CORRAL_API_KEY" in result.stderr


def test_an_api_error_shows_the_servers_message(server: CorralServer, api_key: str) -> None:
    result = cli(server, api_key, "agents", "get", "agent_missing")

    assert result.exit_code == 1
    assert "404 not_found_error: agent agent_missing not found" in result.stderr
