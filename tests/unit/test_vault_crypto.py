"""Vault secrets at rest: AES-GCM sealing under the server's key, and where that key comes from."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from corral.vault.crypto import (
    KEY_FILE_NAME,
    SecretBox,
    SecretKeyError,
    SecretUnavailable,
    load_or_create_key,
    parse_key,
)

KEY = bytes(range(32))


def test_a_sealed_secret_opens_to_the_same_value() -> None:
    box = SecretBox(KEY)

    sealed = box.seal({"token": "s3cret"}, context="row-1")

    assert box.open(sealed, context="row-1") == {"token": "s3cret"}


def test_a_sealed_secret_does_not_contain_the_plaintext() -> None:
    sealed = SecretBox(KEY).seal({"token": "s3cret-value"}, context="row-1")

    assert "s3cret" not in sealed
    assert "s3cret" not in base64.urlsafe_b64decode(sealed.split(".")[2] + "==").decode("latin-1")


def test_sealing_twice_gives_different_ciphertexts() -> None:
    box = SecretBox(KEY)

    assert box.seal({"token": "x"}, context="row-1") != box.seal({"token": "x"}, context="row-1")


def test_a_secret_moved_to_another_row_does_not_open() -> None:
    box = SecretBox(KEY)
    sealed = box.seal({"token": "x"}, context="row-1")

    with pytest.raises(SecretUnavailable, match="does not decrypt"):
        box.open(sealed, context="row-2")


def test_a_secret_sealed_under_another_key_is_reported_as_such() -> None:
    sealed = SecretBox(KEY).seal({"token": "x"}, context="row-1")

    with pytest.raises(SecretUnavailable, match="another key"):
        SecretBox(bytes(32)).open(sealed, context="row-1")


def test_a_tampered_secret_does_not_open() -> None:
    box = SecretBox(KEY)
    sealed = box.seal({"token": "x"}, context="row-1")
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]

    with pytest.raises(SecretUnavailable):
        box.open(tampered, context="row-1")


def test_the_box_repr_names_the_key_id_only() -> None:
    assert repr(SecretBox(KEY)) == f"SecretBox(key_id={SecretBox(KEY).key_id!r})"


@pytest.mark.parametrize("text", [base64.b64encode(KEY).decode(), base64.urlsafe_b64encode(KEY).decode().rstrip("=")])
def test_a_key_parses_from_standard_or_url_safe_base64(text: str) -> None:
    assert parse_key(text) == KEY


@pytest.mark.parametrize("text", ["", "not base64!", base64.b64encode(bytes(16)).decode()])
def test_a_key_that_is_not_32_bytes_of_base64_is_refused(text: str) -> None:
    with pytest.raises(SecretKeyError, match="32"):
        parse_key(text)


def test_a_configured_key_is_used_and_no_key_file_is_written(tmp_path: Path) -> None:
    assert load_or_create_key(base64.b64encode(KEY).decode(), tmp_path) == KEY
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_without_a_configured_key_one_is_generated_into_a_private_file(tmp_path: Path) -> None:
    key = load_or_create_key(None, tmp_path)

    path = tmp_path / KEY_FILE_NAME
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert parse_key(path.read_text()) == key


def test_the_generated_key_is_reused_on_the_next_start(tmp_path: Path) -> None:
    assert load_or_create_key(None, tmp_path) == load_or_create_key(None, tmp_path)


def test_an_unreadable_key_file_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE_NAME).write_text("garbage")
    before = os.stat(tmp_path / KEY_FILE_NAME).st_mtime_ns

    with pytest.raises(SecretKeyError, match="not a valid key"):
        load_or_create_key(None, tmp_path)
    assert os.stat(tmp_path / KEY_FILE_NAME).st_mtime_ns == before
