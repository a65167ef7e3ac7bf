"""The operations of the API, one module per family: agents, environments, sessions, events, vaults.

Each service takes typed inputs (the request models the API validates bodies with, which live beside the
operations that use them) and returns records; HTTP handlers (`corral.api`) only parse, call and render, so
another front end (a CLI, a queue consumer) can reuse an operation whole. Services reach the rest of the
system through the parts they are given: the store, the session log (the one writer of every session's
events), the brain, the hands and the live streams.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.services.agents import Agents
from corral.services.environments import Environments
from corral.services.events import Events
from corral.services.sessions import Sessions
from corral.services.vaults import Vaults


@dataclass(frozen=True)
class Services:
    agents: Agents
    environments: Environments
    sessions: Sessions
    events: Events
    vaults: Vaults
