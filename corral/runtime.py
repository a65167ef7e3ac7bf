"""The running server's parts, wired together once at start and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from corral.config import Settings
from corral.hands.base import HandsProvider
from corral.models.router import ModelRouter
from corral.session.fanout import EventBus
from corral.session.log import SessionLog
from corral.session.store import Store

if TYPE_CHECKING:
    from corral.brain.scheduler import Brain


@dataclass
class Runtime:
    settings: Settings
    store: Store
    bus: EventBus
    log: SessionLog
    hands: HandsProvider
    models: ModelRouter
    brain: Brain


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def workspace_of(request: Request) -> str:
    """The workspace of the API key that authenticated this request (set by the auth middleware)."""
    return str(request.scope["corral.workspace_id"])
