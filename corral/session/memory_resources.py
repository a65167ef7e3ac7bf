"""The in-memory `Resources` port: agents and their versions, environments, sessions."""

from __future__ import annotations

import json
from dataclasses import replace

from corral.session.memory_tables import (
    AgentRow,
    MemoryTables,
    SessionRow,
    keyset_page,
    newest_first,
    read_body,
    stored_pair,
    within,
)
from corral.session.records import (
    AgentRecord,
    EnvironmentRecord,
    Json,
    Page,
    SessionRecord,
    TimeBounds,
)
from corral.session.sql_port import dumps


class MemoryResources(MemoryTables):
    """`corral.session.ports.Resources` in memory."""

    # --- Resources: agents -----------------------------------------------------------------------

    async def insert_agent(self, agent: AgentRecord) -> None:
        async with self.db.lock:
            if agent.id in self.db.agents:
                raise ValueError(f"agent {agent.id} already exists")
            stored = AgentRow(agent.workspace_id, agent.created_at, agent.version)
            stored.versions[agent.version] = (dumps(agent.body), agent.updated_at)
            self.db.agents[agent.id] = stored

    async def add_agent_version(self, agent: AgentRecord, expected_version: int) -> bool:
        async with self.db.lock:
            stored = self.db.agents.get(agent.id)
            if stored is None or stored.latest_version != expected_version:
                return False
            stored.latest_version = agent.version
            stored.versions[agent.version] = (dumps(agent.body), agent.updated_at)
            return True

    def _agent(self, agent_id: str, stored: AgentRow, version: int) -> AgentRecord:
        body, updated_at = stored.versions[version]
        return AgentRecord(
            agent_id, stored.workspace_id, version, json.loads(body), stored.created_at, updated_at, stored.archived_at
        )

    async def get_agent(self, workspace_id: str, agent_id: str, version: int | None = None) -> AgentRecord | None:
        stored = self.db.agents.get(agent_id)
        if stored is None or stored.workspace_id != workspace_id:
            return None
        version = stored.latest_version if version is None else version
        return self._agent(agent_id, stored, version) if version in stored.versions else None

    async def list_agents(
        self,
        workspace_id: str,
        *,
        include_archived: bool,
        created: TimeBounds,
        limit: int,
        cursor: Json | None,
    ) -> Page:
        latest = [
            self._agent(agent_id, stored, stored.latest_version)
            for agent_id, stored in self.db.agents.items()
            if stored.workspace_id == workspace_id
            and (include_archived or stored.archived_at is None)
            and within(stored.created_at, created)
        ]
        return keyset_page(latest, lambda agent: (agent.created_at, agent.id), order="desc", limit=limit, cursor=cursor)

    async def list_agent_versions(self, workspace_id: str, agent_id: str, *, limit: int, cursor: Json | None) -> Page:
        stored = self.db.agents.get(agent_id)
        if stored is None or stored.workspace_id != workspace_id:
            return Page(items=[])
        versions = [self._agent(agent_id, stored, version) for version in stored.versions]
        return keyset_page(versions, lambda agent: (agent.version, agent.id), order="desc", limit=limit, cursor=cursor)

    async def archive_agent(self, workspace_id: str, agent_id: str, archived_at: str) -> None:
        async with self.db.lock:
            stored = self.db.agents.get(agent_id)
            if stored is not None and stored.workspace_id == workspace_id:
                stored.archived_at = stored.archived_at or archived_at

    # --- Resources: environments -----------------------------------------------------------------

    def _environment_named(self, workspace_id: str, name: str, other_than: str) -> bool:
        return any(
            env.workspace_id == workspace_id and env.name == name and env.id != other_than
            for env, _ in self.db.environments.values()
        )

    async def insert_environment(self, environment: EnvironmentRecord) -> bool:
        async with self.db.lock:
            if environment.id in self.db.environments:
                raise ValueError(f"environment {environment.id} already exists")
            if self._environment_named(environment.workspace_id, environment.name, environment.id):
                return False
            self.db.environments[environment.id] = stored_pair(environment, environment.body)
            return True

    async def update_environment(self, environment: EnvironmentRecord) -> bool:
        async with self.db.lock:
            found = self._environment(environment.workspace_id, environment.id)
            if found is None:
                return True  # like an UPDATE that matches no row
            if self._environment_named(environment.workspace_id, environment.name, environment.id):
                return False
            updated = replace(found, name=environment.name, body=environment.body, updated_at=environment.updated_at)
            self.db.environments[environment.id] = stored_pair(updated, environment.body)
            return True

    def _environment(self, workspace_id: str, environment_id: str) -> EnvironmentRecord | None:
        found = self.db.environments.get(environment_id)
        if found is None or found[0].workspace_id != workspace_id:
            return None
        environment: EnvironmentRecord = read_body(found)
        return environment

    async def get_environment(self, workspace_id: str, environment_id: str) -> EnvironmentRecord | None:
        return self._environment(workspace_id, environment_id)

    async def list_environments(
        self, workspace_id: str, *, include_archived: bool, limit: int, cursor: Json | None
    ) -> Page:
        environments = [
            read_body(pair) for pair in self.db.environments.values() if pair[0].workspace_id == workspace_id
        ]
        return newest_first(environments, include_archived, limit, cursor)

    async def delete_environment(self, workspace_id: str, environment_id: str) -> None:
        async with self.db.lock:
            if self._environment(workspace_id, environment_id) is not None:
                del self.db.environments[environment_id]

    async def archive_environment(self, workspace_id: str, environment_id: str, archived_at: str) -> None:
        async with self.db.lock:
            found = self._environment(workspace_id, environment_id)
            if found is not None:
                archived = replace(found, archived_at=found.archived_at or archived_at, updated_at=archived_at)
                self.db.environments[environment_id] = stored_pair(archived, found.body)

    # --- Resources: sessions ---------------------------------------------------------------------

    async def insert_session(self, session: SessionRecord) -> None:
        async with self.db.lock:
            if session.id in self.db.sessions:
                raise ValueError(f"session {session.id} already exists")
            self.db.sessions[session.id] = SessionRow(session, dumps(session.body), dumps(session.usage))

    async def get_session(self, workspace_id: str | None, session_id: str) -> SessionRecord | None:
        stored = self.db.sessions.get(session_id)
        if stored is None or (workspace_id is not None and stored.record.workspace_id != workspace_id):
            return None
        return stored.read()

    async def list_sessions(
        self,
        workspace_id: str,
        *,
        agent_id: str | None,
        agent_version: int | None,
        statuses: list[str],
        include_archived: bool,
        created: TimeBounds,
        order: str,
        limit: int,
        cursor: Json | None,
    ) -> Page:
        def matches(session: SessionRecord) -> bool:
            return (
                session.workspace_id == workspace_id
                and (agent_id is None or session.agent_id == agent_id)
                and (agent_id is None or agent_version is None or session.agent_version == agent_version)
                and (not statuses or session.status in statuses)
                and (include_archived or session.archived_at is None)
                and within(session.created_at, created)
            )

        found = [stored.read() for stored in self.db.sessions.values() if matches(stored.record)]
        return keyset_page(
            found,
            lambda session: (session.created_at, session.id),
            order=order,
            limit=limit,
            cursor=cursor,
            bidirectional=True,
        )

    async def count_sessions(self, workspace_id: str, statuses: list[str], *, excluding: str, up_to: int) -> int:
        found = sum(
            1
            for stored in self.db.sessions.values()
            if stored.record.workspace_id == workspace_id
            and stored.record.status in statuses
            and stored.record.id != excluding
        )
        return min(found, max(up_to, 0))

    async def archive_session(self, session_id: str, archived_at: str) -> None:
        async with self.db.lock:
            stored = self.db.sessions.get(session_id)
            if stored is not None:
                stored.record = replace(
                    stored.record, archived_at=stored.record.archived_at or archived_at, updated_at=archived_at
                )

    async def delete_session(self, session_id: str) -> None:
        async with self.db.lock:
            for event in self.events_of(session_id):
                del self.db.events[event.id]
            self.db.leases.pop(session_id, None)
            self.db.sessions.pop(session_id, None)
