"""Runs at most one worker per session and wakes sessions when events arrive.

`wake` is cheap and idempotent: it starts a worker if none runs, or marks the running one to look at the
queue again before it exits, so an event sent just as a worker finishes is never stranded.

Across processes, a session's lease decides which brain works on it. A worker renews its lease while it
runs and stops if it ever loses it; a sweep takes over sessions whose brain died (lease expired) and any
work a lost wake-up left behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from corral.brain.harness import SessionWorker
from corral.config import Settings
from corral.hands.base import HandsProvider
from corral.mcp.client import McpHub
from corral.models.router import ModelRouter
from corral.protocol.events import session_error, status_idle
from corral.session.log import SessionLog

log = logging.getLogger("corral.brain")

# Workers of recently active sessions stay in memory so a new turn reads only the events it has not seen.
MAX_CACHED_WORKERS = 1000


class Brain:
    def __init__(
        self,
        session_log: SessionLog,
        hands: HandsProvider,
        models: ModelRouter,
        settings: Settings,
        mcp: McpHub | None = None,
    ) -> None:
        self._log = session_log
        self._store = session_log.store
        self._hands = hands
        self._models = models
        self._settings = settings
        # Sessions' MCP connections, kept open between turns (and across worker cache evictions).
        self._mcp = mcp or McpHub(settings.mcp, None)
        self.node_id = settings.node_id
        self._lease_ttl = settings.lease_ttl_seconds
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._workers: OrderedDict[str, SessionWorker] = OrderedDict()
        self._rewake: set[str] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Resume what a previous process left unfinished, then keep sweeping for orphaned work."""
        await self.sweep()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="brain:sweep")

    async def sweep(self) -> int:
        """Wake every session with work that no live brain holds: queued events, or a turn cut short."""
        session_ids = await self._store.sessions_with_work(self.node_id)
        for session_id in session_ids:
            self.wake(session_id)
        return len(session_ids)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl / 3)
            try:
                await self.sweep()
            except Exception:
                log.exception("brain sweep failed; trying again")

    def wake(self, session_id: str) -> None:
        """Make sure the session's queued events get processed."""
        if session_id in self._tasks:
            self._rewake.add(session_id)
            return
        self._tasks[session_id] = asyncio.create_task(self._run(session_id), name=f"brain:{session_id}")

    def interrupt(self, session_id: str) -> None:
        """Cancel the session's running turn (model request and tool call); the worker then settles it."""
        worker = self._workers.get(session_id)
        if worker is not None:
            worker.interrupt()

    def is_active(self, session_id: str) -> bool:
        return session_id in self._tasks

    async def stop(self, session_id: str) -> None:
        """Cancel the session's worker outright (the session is being deleted)."""
        task = self._tasks.get(session_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._workers.pop(session_id, None)
        await self._mcp.release(session_id)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._mcp.close()

    async def _run(self, session_id: str) -> None:
        try:
            if not await self._store.acquire_lease(session_id, self.node_id, self._lease_ttl):
                return  # another brain works on it; it sees the new events, or its lease expires
            renewing = asyncio.create_task(self._keep_lease(session_id, asyncio.current_task()))
            try:
                while True:
                    self._rewake.discard(session_id)
                    await self._work(session_id)
                    if session_id not in self._rewake:
                        return
            finally:
                renewing.cancel()
                await asyncio.gather(renewing, return_exceptions=True)
                await self._store.release_lease(session_id, self.node_id)
        finally:
            self._tasks.pop(session_id, None)
            # A wake that came after the worker's last look (while it let go of the lease) found it still listed
            # and only marked it; nothing else would look again (an answered custom tool call is not queued work
            # that a sweep finds), so start over for it, unless this worker is being cancelled.
            current = asyncio.current_task()
            if session_id in self._rewake and not (current is not None and current.cancelling()):
                self._rewake.discard(session_id)
                self.wake(session_id)

    async def _keep_lease(self, session_id: str, worker: asyncio.Task[None] | None) -> None:
        """Renew the lease while the worker runs; if it is lost, stop the worker (another brain took over)."""
        while True:
            await asyncio.sleep(self._lease_ttl / 3)
            try:
                held = await self._store.acquire_lease(session_id, self.node_id, self._lease_ttl)
            except Exception:
                log.exception("session %s: could not renew the lease; trying again", session_id)
                continue
            if not held:
                log.warning("session %s: lease lost to another brain; stopping here", session_id)
                self._workers.pop(session_id, None)
                if worker is not None:
                    worker.cancel()
                return

    async def _work(self, session_id: str) -> None:
        session = await self._log.store.get_session(None, session_id)
        if session is None or session.archived_at is not None:
            self._workers.pop(session_id, None)
            return
        worker = self._workers.get(session_id)
        if worker is None:
            worker = SessionWorker(
                session_id,
                log_=self._log,
                hands=self._hands,
                models=self._models,
                settings=self._settings,
                mcp=self._mcp,
            )
            self._workers[session_id] = worker
            while len(self._workers) > MAX_CACHED_WORKERS:
                oldest = next(iter(self._workers))
                if oldest in self._tasks:
                    break
                del self._workers[oldest]
        self._workers.move_to_end(session_id)
        try:
            await worker.resume(session)
            await worker.process()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("session %s: the harness failed", session_id)
            self._workers.pop(session_id, None)  # rebuild from the log next time
            await self._fail(session_id, exc)

    async def _fail(self, session_id: str, exc: Exception) -> None:
        """Report an unexpected harness failure on the session and leave it idle, never stuck running."""
        error = {
            "type": "unknown_error",
            "message": f"the Corral harness failed: {type(exc).__name__}: {exc}",
            "retry_status": {"type": "exhausted"},
        }
        try:
            await self._log.append(
                session_id,
                session_error(error),
                status_idle({"type": "retries_exhausted"}),
            )
        except Exception:
            log.exception("session %s: could not record the failure", session_id)
