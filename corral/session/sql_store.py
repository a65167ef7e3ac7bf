"""The SQL both adapters share: every statement of the `Store` written once, over a four-call database port.

`SqlStore` is the combination of one mixin per storage port (`corral.session.ports`), each holding that port's
SQL: `sql_keys`, `sql_resources`, `sql_work`, `sql_event_log` and `sql_vaults`, all over `sql_port.SqlPort`. They
reach the database only through `_one`, `_all`, `_execute` and `_transaction`, which each adapter implements on
its own driver. The adapters keep what really differs: connecting, the append path (positions, derived state,
notifications), retries, the clock leases compare with, and how a list of ids travels as one parameter.
"""

from __future__ import annotations

from corral.session.sql_event_log import SqlEventLog
from corral.session.sql_keys import SqlKeys
from corral.session.sql_resources import SqlResources
from corral.session.sql_vaults import SqlVaults
from corral.session.sql_work import SqlWork


class SqlStore(SqlKeys, SqlResources, SqlWork, SqlEventLog, SqlVaults):
    """The shared half of a SQL `Store` (see `corral.session.store.Store` for the contract).

    Writes say whether they are `replayable`: safe to run again after a lost connection even if their COMMIT
    may have succeeded (the PostgreSQL adapter retries those; SQLite has no connection to lose).
    """
