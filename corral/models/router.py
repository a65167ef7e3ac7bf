"""Chooses the provider for a model id from the configured route table."""

from __future__ import annotations

from corral.config import ModelRoute, Settings
from corral.models.anthropic_messages import AnthropicMessagesProvider
from corral.models.base import ModelError, ModelProvider
from corral.models.openai_chat import OpenAIChatProvider


class ModelRouter:
    """Providers are made on first use per (route, key) and reused, so connections stay pooled."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._providers: dict[tuple[str, str, str], ModelProvider] = {}

    def provider_for(self, model_id: str) -> ModelProvider:
        route = self._settings.route_for(model_id)
        if route is None:
            raise ModelError("invalid", f"no model route matches '{model_id}'; add one to the server's model routes")
        key = route.api_key()
        if key is None:
            raise ModelError(
                "missing_credential",
                f"no API key for model '{model_id}': set {route.api_key_env} in the Corral server's environment "
                f"(route '{route.match}' -> {route.base_url})",
            )
        cache_key = (route.provider, route.base_url, key)
        provider = self._providers.get(cache_key)
        if provider is None:
            provider = self._make(route, key)
            self._providers[cache_key] = provider
        return provider

    def _make(self, route: ModelRoute, key: str) -> ModelProvider:
        if route.provider == "anthropic":
            return AnthropicMessagesProvider(route.base_url, key, self._settings.model_timeout)
        return OpenAIChatProvider(route.base_url, key, self._settings.model_timeout)

    def describe_credential(self, model_id: str) -> str:
        route = self._settings.route_for(model_id)
        return route.api_key_env if route else "a model route"

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()
        self._providers.clear()
