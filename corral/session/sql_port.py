"""The database port under the shared SQL: four calls (`_one`, `_all`, `_execute`, `_transaction`) that each
driver implements, and what every port's statements share (keyset paging, placeholders, JSON encoding).

The SQL of each storage port lives in a mixin over `SqlPort` (`sql_keys`, `sql_resources`, `sql_work`,
`sql_event_log`, `sql_vaults`); `corral.session.sql_store.SqlStore` combines them. Statements are written with
`?` placeholders; the PostgreSQL adapter translates them (`pyformat`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from corral.session.records import Json, Page, TimeBounds
from corral.session.rows import Row

T = TypeVar("T")
Params = Sequence[Any]
# Runs one statement inside a transaction; returns the number of rows it changed.
Execute = Callable[[str, Params], Awaitable[int]]

# One encoder for every write: `json.dumps` with options builds a new one per call, which costs more than encoding.
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@functools.lru_cache(maxsize=512)
def pyformat(sql: str) -> str:
    """The statement with psycopg's `%s` placeholders for `?` (a literal `%` doubled, as psycopg wants it).

    Every `?` is taken for a placeholder, so shared SQL cannot use PostgreSQL's `?` JSON operators."""
    return sql.replace("%", "%%").replace("?", "%s")


def in_list(values: Sequence[Any]) -> str:
    """Placeholders for `column IN (...)`, one per value."""
    return ", ".join("?" for _ in values)


def bounds_sql(column: str, bounds: TimeBounds, where: list[str], params: list[Any]) -> None:
    for op, value in ((">", bounds.gt), (">=", bounds.gte), ("<", bounds.lt), ("<=", bounds.lte)):
        if value is not None:
            where.append(f"{column} {op} ?")
            params.append(value)


class SqlPort:
    """The four-call database port each SQL driver implements, and the helpers every port's SQL uses.

    Writes say whether they are `replayable`: safe to run again after a lost connection even if their COMMIT
    may have succeeded (the PostgreSQL adapter retries those; SQLite has no connection to lose).
    """

    # What the driver raises when an insert or update breaks a uniqueness constraint.
    _unique_violation: type[Exception]

    # --- the database port, one implementation per driver --------------------------------------

    async def _one(self, sql: str, params: Params = ()) -> Row | None:
        raise NotImplementedError

    async def _all(self, sql: str, params: Params = ()) -> list[Row]:
        raise NotImplementedError

    async def _execute(self, sql: str, params: Params, *, replayable: bool = True) -> int:
        """One write statement on its own; returns the number of rows it changed."""
        raise NotImplementedError

    async def _transaction(
        self, work: Callable[[Execute], Awaitable[T]], *, replayable: bool, pipelined: bool = False
    ) -> T:
        """Run `work` in one transaction. `pipelined`: statements do not wait for one another's results (a
        PostgreSQL round trip saved), so `work` must not use the counts they return."""
        raise NotImplementedError

    # --- keyset pagination -----------------------------------------------------------------------

    async def _keyset_page(
        self,
        select_sql: str,
        where: list[str],
        params: list[Any],
        *,
        key_columns: tuple[str, str],
        order: str,
        limit: int,
        cursor: Json | None,
        to_item: Callable[[Row], Any],
        bidirectional: bool = False,
    ) -> Page:
        """One page ordered by (key_columns) in `order`; cursors carry the boundary key and a direction."""
        going_back = bool(cursor and cursor.get("d") == "prev")
        scan_desc = (order == "desc") != going_back
        key = cursor.get("k") if cursor else None
        first, second = key_columns
        if key is not None:
            where = [*where, f"({first}, {second}) {'<' if scan_desc else '>'} (?, ?)"]
            params = [*params, *key]
        direction = "DESC" if scan_desc else "ASC"
        sql = (
            f"{select_sql} WHERE {' AND '.join(where) or 'TRUE'} "
            f"ORDER BY {first} {direction}, {second} {direction} LIMIT ?"
        )
        found, more = await self._up_to(limit, sql, params)
        if going_back:
            found.reverse()
        if not found:
            return Page(items=[])

        def key_of(row: Row) -> list[Any]:
            return [row[first], row[second]]

        has_next = (more and not going_back) or going_back
        has_prev = (more and going_back) or (not going_back and key is not None)
        return Page(
            items=[to_item(row) for row in found],
            next_cursor={"d": "next", "k": key_of(found[-1])} if has_next else None,
            prev_cursor={"d": "prev", "k": key_of(found[0])} if bidirectional and has_prev else None,
        )

    async def _up_to(self, limit: int, sql: str, params: list[Any]) -> tuple[list[Row], bool]:
        """The first `limit` rows of `sql` (which ends in `LIMIT ?`), and whether more follow."""
        found = await self._all(sql, [*params, limit + 1])
        return found[:limit], len(found) > limit

    async def _write_unless_taken(self, sql: str, params: Params, *, replayable: bool) -> bool:
        """Run a write that a uniqueness constraint may refuse; False when it does."""
        try:
            await self._execute(sql, params, replayable=replayable)
        except self._unique_violation:
            return False
        return True

    async def _list_newest_first(
        self,
        table: str,
        where: list[str],
        params: list[Any],
        include_archived: bool,
        limit: int,
        cursor: Json | None,
        to_item: Callable[[Row], Any],
    ) -> Page:
        """A page of `table`'s rows, newest first (archived ones too if asked)."""
        if not include_archived:
            where = [*where, "archived_at IS NULL"]
        return await self._keyset_page(
            f"SELECT * FROM {table}",
            where,
            params,
            key_columns=("created_at", "id"),
            order="desc",
            limit=limit,
            cursor=cursor,
            to_item=to_item,
        )
