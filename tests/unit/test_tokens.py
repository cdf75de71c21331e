"""API tokens: shown once, stored as a digest, checked in constant time."""

from __future__ import annotations

import hashlib
import re
from dataclasses import FrozenInstanceError, asdict
from datetime import UTC, datetime

import pytest

from runner.tokens import (
    TOKEN_PREFIX,
    ApiToken,
    bearer_token,
    check_token_name,
    looks_like_token,
    new_token,
    token_digest,
    verify_token,
)

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)


def test_a_new_token_is_prefixed_random_and_stored_only_as_its_digest() -> None:
    token, record = new_token("ci", now=NOW)
    assert token.startswith(TOKEN_PREFIX) and len(token) == len(TOKEN_PREFIX) + 43
    assert looks_like_token(token)
    assert record.name == "ci" and record.created_at == NOW
    assert record.digest == hashlib.sha256(token.encode()).hexdigest() == token_digest(token)
    assert len(record.digest) == 64
    # Nothing stored gives the token back: only its first characters, to recognise it.
    assert all(token not in str(value) for value in asdict(record).values())
    assert record.shown == token[:8] + "…"
    with pytest.raises(FrozenInstanceError):
        record.name = "other"  # type: ignore[misc]


def test_tokens_do_not_repeat() -> None:
    tokens = {new_token("t", now=NOW)[0] for _ in range(1000)}
    assert len(tokens) == 1000
    assert len({token[4:8] for token in tokens}) > 900  # the shown part differs too


def test_verify_accepts_the_token_and_nothing_else() -> None:
    token, record = new_token("ci", now=NOW)
    other, _ = new_token("ci", now=NOW)
    assert verify_token(token, record)
    for wrong in (other, token[:-1], token + "x", token.upper(), "", " " + token, "rnr_"):
        assert not verify_token(wrong, record), wrong


def test_records_are_found_by_digest() -> None:
    """The store keeps a unique index on the digest: one lookup, no scan of all tokens."""
    made = [new_token(f"t{i}", now=NOW) for i in range(5)]
    by_digest = {record.digest: record for _, record in made}
    token, record = made[3]
    assert by_digest[token_digest(token)] == record


@pytest.mark.parametrize(
    "text",
    ["", "rnr_", "rnr_" + "a" * 42, "rnr_" + "a" * 44, "xyz_" + "a" * 43, "rnr_" + "a" * 42 + "="],
)
def test_what_does_not_look_like_a_token(text: str) -> None:
    assert not looks_like_token(text)


@pytest.mark.parametrize("name", ["ci", "CI-deploy", "team.data_2", "a" * 100, "7"])
def test_good_token_names(name: str) -> None:
    assert check_token_name(name) == name


@pytest.mark.parametrize("name", ["", "-ci", "with space", "a" * 101, "ci/prod", "é"])
def test_bad_token_names_say_what_a_name_may_be(name: str) -> None:
    with pytest.raises(ValueError, match=re.escape("use letters, digits, '.', '_' and '-'")):
        new_token(name, now=NOW)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer rnr_abc", "rnr_abc"),
        ("bearer rnr_abc", "rnr_abc"),
        ("BEARER   rnr_abc  ", "rnr_abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer a b", None),
        ("rnr_abc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


def test_a_record_is_a_plain_value() -> None:
    record = ApiToken(name="ci", digest="0" * 64, shown="rnr_0000…", created_at=NOW)
    assert record == ApiToken(name="ci", digest="0" * 64, shown="rnr_0000…", created_at=NOW)
