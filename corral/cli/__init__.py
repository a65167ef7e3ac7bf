"""The corral command: serve, keys."""
