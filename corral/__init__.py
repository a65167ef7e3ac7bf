"""Corral: a self-hosted runtime for managed AI agents, wire-compatible with Anthropic's Managed Agents API."""

__version__ = "0.1.0"
