"""Ticket tokens: made in one place, and what adapters accept from outside as one."""

from __future__ import annotations

import pytest

from hall_daemon.tokens import looks_like_token, new_token

pytestmark = pytest.mark.unit


def test_a_new_token_is_url_safe_unguessable_and_accepted_from_outside() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(t) == 22 and looks_like_token(t) for t in tokens)


@pytest.mark.parametrize(
    "text", ["", "A012", "x" * 15, "x" * 65, "a/b" + "c" * 20, "with space" + "x" * 10, "é" * 20]
)
def test_what_could_not_be_a_token_is_not_taken_for_one(text: str) -> None:
    assert not looks_like_token(text)
