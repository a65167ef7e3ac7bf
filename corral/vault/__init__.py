"""Vaults: credentials that sessions use without ever holding them (encryption at rest, matching, injection)."""
