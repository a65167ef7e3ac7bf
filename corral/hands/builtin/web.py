"""web_fetch and web_search: run in the server, outside every sandbox, with the agent's per-tool config.

web_fetch (`{url}`) fetches one page. Each hop (redirects included, at most `MAX_REDIRECTS`) is checked
against the tool's `allowed_domains` / `blocked_domains` (a domain matches itself and its subdomains) and
resolved through the same `AddressPolicy` as the egress proxy: private, loopback, link-local and metadata
addresses are refused, and the connection goes to the address that was checked (TLS still verifies the
host name). HTML becomes readable Markdown-ish text (trafilatura: main content, links kept); text types
pass through; PDFs come back as a document block, images as an image block. Text is capped at
`max_content_tokens` (about four characters a token; default `DEFAULT_MAX_CONTENT_TOKENS`).

web_search (`{query}`) asks the configured backend (SearXNG's JSON API, or the Brave Search API) and returns
`search_result` blocks, filtered by the tool's domain lists. With no backend configured it is not offered to
the model at all (`WebTools.tool_names`). Networking settings of the environment never apply here (spec §4.2).
"""

from __future__ import annotations

import asyncio
import base64
import html
import logging
import os
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from corral.hands.base import ToolResult
from corral.hands.net.policy import AddressPolicy, EgressRefused, domain_matches, normalize_host

log = logging.getLogger("corral.web")

MAX_REDIRECTS = 5
DEFAULT_MAX_CONTENT_TOKENS = 25_000
CHARS_PER_TOKEN = 4
MAX_RESPONSE_BYTES = 10 * 1024 * 1024
MAX_BINARY_BYTES = 5 * 1024 * 1024  # PDFs and images, before base64
SEARCH_RESULTS = 10
USER_AGENT = "Corral-web_fetch/0.1 (+https://github.com/corral)"
BRAVE_API_KEY_ENV = "BRAVE_SEARCH_API_KEY"
_TIMEOUT = httpx.Timeout(20.0, connect=10.0)
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "application/x-javascript")
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")

ToolHandler = Callable[[object, dict[str, Any] | None], Awaitable[ToolResult]]


class WebError(Exception):
    """A web tool failed in a way the model should read (the message is the tool result)."""


# -- search backends ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchHit:
    url: str
    title: str
    snippet: str


class SearchBackend(Protocol):
    name: str

    async def search(self, query: str, count: int, location: dict[str, Any] | None) -> list[SearchHit]:
        """Up to `count` results for `query`; WebError with a readable message on failure."""
        ...


def _client(**kwargs: Any) -> httpx.AsyncClient:
    # The host's CA store (not certifi's), so a deployment's own CA is trusted as curl would trust it.
    return httpx.AsyncClient(verify=ssl.create_default_context(), timeout=_TIMEOUT, **kwargs)


class SearxngBackend:
    """A SearXNG instance's JSON API (`search.formats` in its settings.yml must include `json`)."""

    name = "searxng"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    async def search(self, query: str, count: int, location: dict[str, Any] | None) -> list[SearchHit]:
        url = f"{self.base_url}/search"
        params = {"q": query, "format": "json"}
        try:
            async with _client() as client:
                response = await client.get(url, params=params, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise WebError(f"web_search: SearXNG at {self.base_url} is unreachable: {exc}") from exc
        if response.status_code == 403:
            raise WebError(
                f"web_search: SearXNG at {self.base_url} refused format=json; enable it under search.formats "
                "in its settings.yml"
            )
        if response.status_code != 200:
            raise WebError(f"web_search: SearXNG at {self.base_url} answered HTTP {response.status_code}")
        try:
            results = response.json().get("results") or []
        except ValueError as exc:
            raise WebError(f"web_search: SearXNG at {self.base_url} did not answer JSON") from exc
        return [
            SearchHit(str(r.get("url")), str(r.get("title") or ""), str(r.get("content") or ""))
            for r in results
            if isinstance(r, dict) and r.get("url")
        ][:count]


class BraveBackend:
    """The Brave Search API; the key is read from the server's environment at each call."""

    name = "brave"

    def __init__(self, api_key_env: str = BRAVE_API_KEY_ENV, base_url: str = "https://api.search.brave.com") -> None:
        self.api_key_env = api_key_env
        self.base_url = base_url.rstrip("/")

    async def search(self, query: str, count: int, location: dict[str, Any] | None) -> list[SearchHit]:
        key = os.environ.get(self.api_key_env)
        if not key:
            raise WebError(f"web_search: set {self.api_key_env} in the Corral server's environment (Brave Search)")
        headers = {"Accept": "application/json", "X-Subscription-Token": key}
        params: dict[str, str | int] = {"q": query, "count": min(count, 20)}
        location = location or {}
        for field, header in (("city", "X-Loc-City"), ("region", "X-Loc-State"), ("timezone", "X-Loc-Timezone")):
            if location.get(field):
                headers[header] = str(location[field])
        if location.get("country"):
            params["country"] = str(location["country"]).upper()
            headers["X-Loc-Country"] = str(location["country"]).upper()
        try:
            async with _client() as client:
                response = await client.get(f"{self.base_url}/res/v1/web/search", params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise WebError(f"web_search: Brave Search is unreachable: {exc}") from exc
        if response.status_code in (401, 403):
            raise WebError(f"web_search: Brave Search rejected the key in {self.api_key_env}")
        if response.status_code != 200:
            raise WebError(f"web_search: Brave Search answered HTTP {response.status_code}")
        results = ((response.json().get("web") or {}).get("results")) or []
        return [
            SearchHit(str(r["url"]), _strip_tags(str(r.get("title") or "")), _strip_tags(str(r.get("description", ""))))
            for r in results
            if isinstance(r, dict) and r.get("url")
        ][:count]


def _strip_tags(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


# -- the tools ----------------------------------------------------------------------------------


@dataclass
class _Page:
    url: str
    content_type: str
    charset: str | None
    body: bytes
    truncated: bool


class WebTools:
    """The server's web tools. `addresses` is the SSRF policy shared with the egress proxy."""

    def __init__(self, addresses: AddressPolicy, search_backend: SearchBackend | None = None) -> None:
        self.addresses = addresses
        self.search_backend = search_backend

    @property
    def tool_names(self) -> frozenset[str]:
        """What can run here: web_fetch always, web_search only with a backend."""
        return frozenset(self.handlers())

    def handlers(self) -> dict[str, ToolHandler]:
        handlers: dict[str, ToolHandler] = {"web_fetch": self.fetch}
        if self.search_backend is not None:
            handlers["web_search"] = self.search
        return handlers

    async def close(self) -> None:
        """Nothing is held between calls (every call has its own client, so no cookies cross sessions)."""

    # -- web_fetch --------------------------------------------------------------------------------

    async def fetch(self, tool_input: object, config: dict[str, Any] | None = None) -> ToolResult:
        """web_fetch: never raises; failures are error results that say what to do."""
        try:
            url = _input_url(tool_input)
            page = await self._get(url, config or {})
            return await self._render(page, config or {})
        except WebError as exc:
            return ToolResult.error(str(exc))
        except Exception as exc:
            log.exception("web_fetch failed")
            return ToolResult.error(f"web_fetch: internal error: {type(exc).__name__}: {exc}")

    async def _get(self, url: str, config: dict[str, Any]) -> _Page:
        async with _client(trust_env=False, follow_redirects=False) as client:
            for _hop in range(MAX_REDIRECTS + 1):
                target = httpx.URL(url)
                host = normalize_host(target.raw_host.decode("ascii"))
                _check_domains(host, config, "web_fetch")
                port = target.port or (443 if target.scheme == "https" else 80)
                try:
                    addresses = await self.addresses.resolve(host, port)
                except EgressRefused as exc:
                    raise WebError(f"web_fetch: refused to fetch {url}: {exc}") from exc
                response = await self._request(client, target, host, addresses)
                try:
                    location = response.headers.get("location")
                    if response.is_redirect and location:
                        url = str(target.join(location))
                        if httpx.URL(url).scheme not in ("http", "https"):
                            raise WebError(f"web_fetch: {target} redirects to {url}, which is not http(s)")
                        continue
                    if response.status_code >= 400:
                        detail = (await _read_capped(response, 2000))[0].decode(errors="replace").strip()
                        raise WebError(
                            f"web_fetch: {url} answered HTTP {response.status_code} {response.reason_phrase}"
                            + (f": {_squeeze(detail)[:500]}" if detail else "")
                        )
                    body, truncated = await _read_capped(response, MAX_RESPONSE_BYTES)
                    content_type = response.headers.get("content-type", "")
                    media = content_type.split(";", 1)[0].strip().lower()
                    return _Page(url, media, response.charset_encoding, body, truncated)
                finally:
                    await response.aclose()
        raise WebError(f"web_fetch: more than {MAX_REDIRECTS} redirects starting at {url}")

    async def _request(
        self, client: httpx.AsyncClient, target: httpx.URL, host: str, addresses: list[Any]
    ) -> httpx.Response:
        """GET `target` from the first of the checked `addresses` that answers (never re-resolving)."""
        headers = {
            "Host": target.netloc.decode("ascii"),
            "User-Agent": USER_AGENT,
            "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,application/pdf;q=0.8,*/*;q=0.5",
        }
        errors = []
        for address in addresses:
            pinned = target.copy_with(host=str(address))
            extensions = {"sni_hostname": host} if target.scheme == "https" else {}
            request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
            try:
                return await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                errors.append(f"{address}: {exc or type(exc).__name__}")
        raise WebError(f"web_fetch: could not fetch {target}: {'; '.join(errors)}")

    async def _render(self, page: _Page, config: dict[str, Any]) -> ToolResult:
        media = page.content_type or _sniff(page.body)
        if media == "application/pdf":
            return _binary_block(page, "document", "application/pdf")
        if media in _IMAGE_TYPES:
            return _binary_block(page, "image", media)
        if media in _HTML_TYPES:
            title, text = await asyncio.to_thread(_html_to_text, page.body, page.charset, page.url)
        elif media.startswith("text/") or media in _TEXT_TYPES or media.endswith(("+json", "+xml")):
            title, text = None, page.body.decode(page.charset or "utf-8", errors="replace")
        else:
            raise WebError(f"web_fetch: {page.url} is {media or 'of an unknown type'}, which web_fetch cannot read")
        limit = _max_tokens(config) * CHARS_PER_TOKEN
        notes = []
        if len(text) > limit:
            notes.append(
                f"[content truncated to max_content_tokens={limit // CHARS_PER_TOKEN} "
                f"(about {limit} of {len(text)} characters)]"
            )
            text = text[:limit]
        if page.truncated:
            notes.append(f"[the response was cut at {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB]")
        header = f"URL: {page.url}\n" + (f"Title: {title}\n" if title else "")
        body = text.strip() or "(the page has no readable text)"
        return ToolResult.text("\n".join([header, body, *notes]))

    # -- web_search -------------------------------------------------------------------------------

    async def search(self, tool_input: object, config: dict[str, Any] | None = None) -> ToolResult:
        """web_search: `search_result` blocks (spec §8.3), filtered by the tool's domain lists."""
        backend = self.search_backend
        if backend is None:
            return ToolResult.error("web_search: no search backend is configured on this Corral server")
        try:
            query = _input_query(tool_input)
            config = config or {}
            hits = await backend.search(query, SEARCH_RESULTS * 3, config.get("user_location"))
        except WebError as exc:
            return ToolResult.error(str(exc))
        except Exception as exc:
            log.exception("web_search failed")
            return ToolResult.error(f"web_search: internal error: {type(exc).__name__}: {exc}")
        kept = [hit for hit in hits if _search_allowed(hit.url, config)][:SEARCH_RESULTS]
        if not kept:
            return ToolResult.text(f"No results for {query!r}.")
        return ToolResult(
            content=[
                {
                    "type": "search_result",
                    "source": hit.url,
                    "title": hit.title or hit.url,
                    # Empty text blocks are rejected by the Messages API.
                    "content": [{"type": "text", "text": _squeeze(hit.snippet) or hit.title or hit.url}],
                    "citations": {"enabled": True},
                }
                for hit in kept
            ]
        )


# -- helpers ------------------------------------------------------------------------------------


def _input_url(tool_input: object) -> str:
    if not isinstance(tool_input, dict):
        raise WebError("web_fetch: input must be a JSON object with a 'url'")
    raw = next((tool_input[k] for k in ("url", "uri", "link") if isinstance(tool_input.get(k), str)), None)
    if raw is None or not raw.strip():
        raise WebError("web_fetch: 'url' is required (an http or https URL)")
    url = raw.strip()
    if "://" not in url:
        url = "https://" + url
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise WebError(f"web_fetch: {raw!r} is not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise WebError(f"web_fetch: only http and https URLs can be fetched, not {parsed.scheme}:")
    if not parsed.host:
        raise WebError(f"web_fetch: {raw!r} has no host")
    return str(parsed)


def _input_query(tool_input: object) -> str:
    if isinstance(tool_input, dict):
        for key in ("query", "q"):
            value = tool_input.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    raise WebError("web_search: 'query' is required (a non-empty string)")


def _domain_list(config: dict[str, Any], key: str) -> list[str]:
    value = config.get(key)
    return [str(v) for v in value] if isinstance(value, list) else []


def _check_domains(host: str, config: dict[str, Any], tool: str) -> None:
    allowed = _domain_list(config, "allowed_domains")
    blocked = _domain_list(config, "blocked_domains")
    if allowed and not any(domain_matches(host, d) for d in allowed):
        raise WebError(f"{tool}: {host} is not in this agent's allowed_domains for {tool} ({', '.join(allowed)})")
    if any(domain_matches(host, d) for d in blocked):
        raise WebError(f"{tool}: {host} is in this agent's blocked_domains for {tool}")


def _search_allowed(url: str, config: dict[str, Any]) -> bool:
    """web_search's domain entries are a host with an optional path prefix (`example.com/blog`)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    host, path = normalize_host(parsed.raw_host.decode("ascii")), parsed.path

    def matches(entry: str) -> bool:
        domain, _, prefix = entry.partition("/")
        return domain_matches(host, domain) and path.startswith("/" + prefix if prefix else "")

    allowed = _domain_list(config, "allowed_domains")
    if allowed and not any(matches(e) for e in allowed):
        return False
    return not any(matches(e) for e in _domain_list(config, "blocked_domains"))


def _max_tokens(config: dict[str, Any]) -> int:
    value = config.get("max_content_tokens")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return DEFAULT_MAX_CONTENT_TOKENS


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False


def _sniff(body: bytes) -> str:
    head = body[:512].lstrip().lower()
    if head.startswith(b"%pdf"):
        return "application/pdf"
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head:
        return "text/html"
    return "text/plain"


def _binary_block(page: _Page, kind: str, media: str) -> ToolResult:
    if page.truncated or len(page.body) > MAX_BINARY_BYTES:
        raise WebError(f"web_fetch: {page.url} is larger than {MAX_BINARY_BYTES // (1024 * 1024)} MiB")
    block: dict[str, Any] = {
        "type": kind,
        "source": {"type": "base64", "media_type": media, "data": base64.b64encode(page.body).decode("ascii")},
    }
    if kind == "document":
        block["title"] = page.url
    return ToolResult(content=[block])


def _html_to_text(body: bytes, charset: str | None, url: str) -> tuple[str | None, str]:
    """The page's title and main text as Markdown (trafilatura), or all its text when that finds nothing."""
    import trafilatura  # imported on first use: it is large, and most servers fetch rarely

    document: str | bytes = body.decode(charset, errors="replace") if charset else body
    text = trafilatura.extract(
        document,
        url=url,
        output_format="markdown",
        include_links=True,
        include_formatting=True,
        include_tables=True,
        include_comments=False,
        favor_recall=True,
    )
    if not text:
        text = trafilatura.html2txt(document) or ""
    metadata = trafilatura.extract_metadata(document)
    title = metadata.title if metadata is not None else None
    return title, text


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
