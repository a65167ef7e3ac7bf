"""An environment's packages are installed once, outside the sandbox, and seen read-only inside it.

These use the real registries (PyPI, npm, the Debian mirror) with tiny packages.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.hands.local import LocalHandsProvider
from corral.hands.sandbox.bubblewrap import BubblewrapLauncher
from corral.hands.sandbox.packages import PackageCache, PackageInstallError, package_lists, validate
from corral.hands.sandbox.provision import Provisioner


@pytest.fixture
async def cache_and_provider(data_dir: Path) -> AsyncIterator[tuple[PackageCache, LocalHandsProvider]]:
    launcher = BubblewrapLauncher.detect(data_dir / "workspaces")
    owner = (launcher.identity.uid, launcher.identity.gid)
    cache = PackageCache(data_dir / "packages", run_as=owner)
    provider = LocalHandsProvider(
        data_dir / "workspaces", launcher=launcher, owner=owner, provisioner=Provisioner(packages=cache)
    )
    yield cache, provider
    await provider.close()


def environment(**lists: list[str]) -> dict[str, Any]:
    return {
        "type": "cloud",
        "networking": {"type": "limited", "allowed_hosts": [], "allow_package_managers": True},
        "packages": {"type": "packages", **lists},
    }


async def bash(provider: LocalHandsProvider, session_id: str, env: dict[str, Any], command: str) -> tuple[str, bool]:
    result = await provider.for_session(session_id, env).execute("bash", {"command": command})
    return str(result.content[0]["text"]), result.is_error


@pytest.mark.slow
async def test_pip_npm_and_apt_packages_are_usable_in_the_sandbox_and_read_only(
    cache_and_provider: tuple[PackageCache, LocalHandsProvider],
) -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed on this host")
    _, provider = cache_and_provider
    env = environment(pip=["termcolor==2.4.0"], npm=["is-number@7.0.0"], apt=["hello"])
    output, failed = await bash(
        provider,
        "sesn_p1",
        env,
        "python3 -c 'import termcolor; print(termcolor.__file__)'; "
        "node -e \"console.log('is-number', require('is-number')(5))\"; "
        "hello; touch /opt/corral/packages/pip/x 2>&1 || echo read-only",
    )
    assert not failed, output
    assert "/opt/corral/packages/pip/termcolor/" in output
    assert "is-number true" in output
    assert "Hello, world!" in output
    assert output.rstrip().endswith("read-only")


@pytest.mark.slow
async def test_sessions_of_one_environment_install_its_packages_once(
    cache_and_provider: tuple[PackageCache, LocalHandsProvider],
) -> None:
    cache, provider = cache_and_provider
    env = environment(pip=["termcolor==2.4.0"])
    check = "python3 -c 'import termcolor; print(\"ok\")'"
    concurrent = await asyncio.gather(bash(provider, "sesn_a", env, check), bash(provider, "sesn_b", env, check))
    later = await bash(provider, "sesn_c", env, check)

    assert [result[0].strip() for result in [*concurrent, later]] == ["ok", "ok", "ok"]
    assert cache.installs == 1


@pytest.mark.slow
async def test_a_package_that_cannot_be_installed_is_named_in_the_tool_error(
    cache_and_provider: tuple[PackageCache, LocalHandsProvider],
) -> None:
    _, provider = cache_and_provider
    env = environment(pip=["termcolor==2.4.0", "corral-no-such-package-xyz==0.0.1"])
    output, failed = await bash(provider, "sesn_bad", env, "echo should not run")
    assert failed
    assert "packages could not be installed" in output
    assert "'corral-no-such-package-xyz==0.0.1'" in output
    assert "should not run" not in output


@pytest.mark.parametrize(
    ("lists", "named"),
    [
        ({"pip": ["https://evil.example/pkg.whl"]}, "config.packages.pip"),
        ({"pip": ["--index-url=http://evil.example"]}, "config.packages.pip"),
        ({"npm": ["git+ssh://evil.example/x.git"]}, "config.packages.npm"),
        ({"apt": ["../../etc/passwd"]}, "config.packages.apt"),
        ({"cargo": ["ripgrep"]}, "config.packages.cargo is not supported"),
    ],
)
def test_entries_that_are_not_plain_package_specifiers_are_refused(lists: dict[str, list[str]], named: str) -> None:
    with pytest.raises(PackageInstallError, match=named):
        validate(package_lists(lists))


def test_an_environment_without_packages_installs_nothing() -> None:
    assert package_lists({"type": "packages", "apt": [], "pip": [], "npm": []}) == {}
