"""The client commands of `corral` (run, apply, agents, environments, sessions), one module per command group.

They speak the HTTP API through the official SDK (`common.py`); `register` is the one place that adds them
to the `corral` group.
"""

from __future__ import annotations

import click

from corral.cli.commands.agents import agents
from corral.cli.commands.apply import apply
from corral.cli.commands.environments import environments
from corral.cli.commands.run import run
from corral.cli.commands.sessions import sessions


def register(group: click.Group) -> None:
    """Adds the client commands to the `corral` command group."""
    for command in (run, apply, agents, environments, sessions):
        group.add_command(command)
