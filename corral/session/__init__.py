"""The session log and resource store: interface, SQLite adapter, fan-out, migrations."""
