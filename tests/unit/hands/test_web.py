"""web_fetch and web_search, run in the server with the agent's per-tool config.

A local HTTP server stands in for the web (its exact address:port allowed past the public-address rule,
test host names resolved to it); a fake SearXNG JSON endpoint is the only stand-in for a search engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.hands.base import ToolResult
from corral.hands.builtin.web import SearxngBackend, WebTools
from corral.hands.local import LocalHandsProvider
from corral.hands.net.policy import AddressPolicy, parse_allow_addresses
from tests.support.local_web import LocalWeb, Response, static_resolver

ARTICLE = (
    b"<html><head><title>Corral notes</title><script>var tracking = 1;</script></head><body>"
    b"<nav><a href='/'>Home</a> <a href='/about'>About</a></nav><article><h1>Sandboxes</h1>"
    b"<p>Each session runs its tools in a sandbox of its own, and the sandbox reaches the network only "
    b"through the egress proxy, which checks every host against the environment. "
    b"<a href='/docs/egress'>Read about egress</a>.</p>"
    b"<p>Packages are installed once per environment and shown read-only to every sandbox of it, "
    b"so the second session of an environment starts without installing anything again.</p>"
    b"</article><footer>Copyright nobody</footer></body></html>"
)
SEARXNG_RESULTS = {
    "query": "corral",
    "results": [
        {"url": "https://docs.example.org/corral", "title": "Corral docs", "content": "How Corral runs agents."},
        {"url": "https://blog.other.net/post", "title": "A post", "content": ""},
    ],
}


@pytest.fixture
def site() -> Iterator[LocalWeb]:
    routes = {
        "/article": Response(ARTICLE, "text/html; charset=utf-8"),
        "/plain": Response(b"just text\n" * 5000),
        "/doc.pdf": Response(b"%PDF-1.4\n%fake but small\n", "application/pdf"),
        "/gone": Response(b"nothing here", status=404),
        "/search": Response(json.dumps(SEARXNG_RESULTS).encode(), "application/json"),
    }
    with LocalWeb(routes).running() as web:
        yield web


@pytest.fixture
def host_service() -> Iterator[LocalWeb]:
    with LocalWeb({"/secret": Response(b"host secret")}).running() as web:
        yield web


@pytest.fixture
def web(site: LocalWeb) -> WebTools:
    names = {"site.test": "127.0.0.1", "docs.site.test": "127.0.0.1", "metadata.test": "169.254.169.254"}
    return WebTools(
        AddressPolicy(allow_addresses=parse_allow_addresses(site.address), resolver=static_resolver(names)),
        SearxngBackend(f"http://127.0.0.1:{site.port}"),
    )


def text(result: ToolResult) -> str:
    return str(result.content[0]["text"])


# -- web_fetch ------------------------------------------------------------------------------------


async def test_html_comes_back_as_readable_text_without_scripts_or_chrome(web: WebTools, site: LocalWeb) -> None:
    result = await web.fetch({"url": f"http://site.test:{site.port}/article"})

    assert not result.is_error
    page = text(result)
    assert page.startswith(f"URL: http://site.test:{site.port}/article\nTitle: ")
    assert "# Sandboxes" in page
    assert "[Read about egress](http://site.test:" in page
    assert "tracking" not in page
    assert "Copyright nobody" not in page


async def test_the_request_carries_the_original_host_header(web: WebTools, site: LocalWeb) -> None:
    await web.fetch({"url": f"http://site.test:{site.port}/article"})
    assert site.requests[0].headers["host"] == f"site.test:{site.port}"


async def test_text_is_capped_at_max_content_tokens(web: WebTools, site: LocalWeb) -> None:
    result = await web.fetch({"url": f"http://site.test:{site.port}/plain"}, {"max_content_tokens": 50})

    page = text(result)
    assert page.count("just text") <= 200 // len("just text\n") + 1
    assert "truncated to max_content_tokens=50" in page


async def test_a_pdf_comes_back_as_a_document_block(web: WebTools, site: LocalWeb) -> None:
    result = await web.fetch({"url": f"http://site.test:{site.port}/doc.pdf"})
    (block,) = result.content
    assert block["type"] == "document"
    assert block["source"]["media_type"] == "application/pdf"


async def test_an_http_error_is_an_error_result_with_the_status(web: WebTools, site: LocalWeb) -> None:
    result = await web.fetch({"url": f"http://site.test:{site.port}/gone"})
    assert result.is_error
    assert "HTTP 404" in text(result)


async def test_allowed_domains_admit_subdomains_and_refuse_everything_else(web: WebTools, site: LocalWeb) -> None:
    config = {"allowed_domains": ["site.test"]}
    allowed = await web.fetch({"url": f"http://docs.site.test:{site.port}/article"}, config)
    refused = await web.fetch({"url": f"http://127.0.0.1:{site.port}/article"}, config)

    assert not allowed.is_error
    assert refused.is_error
    assert "not in this agent's allowed_domains" in text(refused)
    assert len(site.requests) == 1


async def test_blocked_domains_refuse_the_domain_and_its_subdomains(web: WebTools, site: LocalWeb) -> None:
    result = await web.fetch({"url": f"http://docs.site.test:{site.port}/article"}, {"blocked_domains": ["site.test"]})
    assert result.is_error
    assert "blocked_domains" in text(result)
    assert site.requests == []


async def test_loopback_services_are_refused(web: WebTools, host_service: LocalWeb) -> None:
    result = await web.fetch({"url": f"http://127.0.0.1:{host_service.port}/secret"})
    assert result.is_error
    assert "loopback" in text(result)
    assert host_service.requests == []


async def test_a_name_resolving_to_the_metadata_address_is_refused(web: WebTools) -> None:
    result = await web.fetch({"url": "http://metadata.test/latest/meta-data/"})
    assert result.is_error
    assert "metadata" in text(result)


async def test_a_redirect_to_a_refused_address_is_not_followed(
    web: WebTools, site: LocalWeb, host_service: LocalWeb
) -> None:
    site.routes["/hop"] = Response(status=302, headers={"Location": f"http://127.0.0.1:{host_service.port}/secret"})
    result = await web.fetch({"url": f"http://site.test:{site.port}/hop"})
    assert result.is_error
    assert "loopback" in text(result)
    assert host_service.requests == []


async def test_a_redirect_within_the_rules_is_followed(web: WebTools, site: LocalWeb) -> None:
    site.routes["/hop"] = Response(status=301, headers={"Location": "/article"})
    result = await web.fetch({"url": f"http://site.test:{site.port}/hop"})
    assert "# Sandboxes" in text(result)
    assert f"URL: http://site.test:{site.port}/article" in text(result)


@pytest.mark.parametrize("tool_input", [{}, {"url": "ftp://site.test/x"}, "http://site.test/"])
async def test_a_missing_or_unsupported_url_is_an_error_result(web: WebTools, tool_input: Any) -> None:
    result = await web.fetch(tool_input)
    assert result.is_error
    assert text(result).startswith("web_fetch:")


# -- web_search -----------------------------------------------------------------------------------


async def test_search_results_come_back_as_search_result_blocks(web: WebTools, site: LocalWeb) -> None:
    result = await web.search({"query": "corral"})

    assert not result.is_error
    first, second = result.content
    assert first == {
        "type": "search_result",
        "source": "https://docs.example.org/corral",
        "title": "Corral docs",
        "content": [{"type": "text", "text": "How Corral runs agents."}],
        "citations": {"enabled": True},
    }
    assert second["content"] == [{"type": "text", "text": "A post"}]  # never an empty text block
    assert site.requests[0].path == "/search?q=corral&format=json"


async def test_search_results_are_filtered_by_the_tools_domain_lists(web: WebTools) -> None:
    allowed = await web.search({"query": "corral"}, {"allowed_domains": ["example.org"]})
    blocked = await web.search({"query": "corral"}, {"blocked_domains": ["example.org"]})
    assert [block["source"] for block in allowed.content] == ["https://docs.example.org/corral"]
    assert [block["source"] for block in blocked.content] == ["https://blog.other.net/post"]


async def test_a_searxng_without_the_json_format_is_named_in_the_error(site: LocalWeb) -> None:
    site.routes["/search"] = Response(b"Forbidden", status=403)
    result = await WebTools(AddressPolicy(), SearxngBackend(f"http://127.0.0.1:{site.port}")).search({"query": "x"})
    assert result.is_error
    assert "search.formats" in text(result)


def test_web_search_is_not_offered_without_a_search_backend(tmp_path: Path) -> None:
    without = LocalHandsProvider(tmp_path, web=WebTools(AddressPolicy()))
    with_backend = LocalHandsProvider(tmp_path, web=WebTools(AddressPolicy(), SearxngBackend("http://127.0.0.1:9")))

    assert "web_fetch" in without.tool_names
    assert "web_search" not in without.tool_names
    assert {"web_fetch", "web_search"} <= with_backend.tool_names


async def test_the_hands_dispatch_web_tools_with_the_per_call_config(
    tmp_path: Path, web: WebTools, site: LocalWeb
) -> None:
    provider = LocalHandsProvider(tmp_path, web=web)
    hands = provider.for_session("sesn_web")
    result = await hands.execute(
        "web_fetch", {"url": f"http://site.test:{site.port}/article"}, {"blocked_domains": ["site.test"]}
    )
    assert result.is_error
    assert "blocked_domains" in text(result)
    await provider.close()
