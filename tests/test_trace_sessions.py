"""The session rule: labels first, then the same client within the idle gap."""

from __future__ import annotations

import pytest

from modgate.trace.sessions import Begin, Join, Label, Sessionizer


def place_all(
    requests: list[tuple[str, float, float]], labels: list[Label] | None = None, gap: float = 10
) -> list[int]:
    """Session numbers for (client, start, end) requests handed over in order of end;
    new sessions are numbered from 1 as the writer would create them."""
    s = Sessionizer(gap)
    made = 0
    out = []
    for client, start, end in requests:
        decision = s.place(client, start, labels or [])
        if isinstance(decision, Begin):
            made += 1
            session = made
        else:
            session = decision.session
        s.joined(client, decision, session, end)
        out.append(session)
    return out


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        ([("a", 0, 1), ("a", 2, 3), ("a", 12.9, 13)], [1, 1, 1]),  # each within 10 s of the last end
        ([("a", 0, 1), ("a", 11.5, 12)], [1, 2]),  # a pause longer than the gap
        ([("a", 0, 30), ("a", 5, 6), ("a", 35, 36)], [1, 1, 1]),  # a long zip keeps it open
        ([("a", 0, 1), ("b", 0.5, 1.5), ("a", 2, 3)], [1, 2, 1]),  # clients apart
        ([("a", 0, 1), ("a", 100, 101), ("a", 102, 103)], [1, 2, 2]),
    ],
)  # fmt: skip
def test_a_client_keeps_its_session_until_it_pauses_longer_than_the_gap(
    requests: list[tuple[str, float, float]], expected: list[int]
) -> None:
    assert place_all(requests) == expected


def test_a_labelled_session_takes_every_client_while_it_is_open() -> None:
    labels = [Label(session=7, name="ci", started=10, stopped=20)]
    requests = [("a", 0, 1), ("a", 10, 11), ("b", 12, 13), ("a", 19.9, 25), ("a", 21, 22)]
    # after the label, the client starts afresh even within the gap of its old session
    assert place_all(requests, labels) == [1, 7, 7, 7, 2]


def test_the_latest_label_wins_and_an_open_label_has_no_end() -> None:
    labels = [Label(1, "old", 0, None), Label(2, "new", 5, None)]
    s = Sessionizer()
    assert s.place("a", 3, labels) == Join(1, labelled=True)
    assert s.place("a", 6, labels) == Join(2, labelled=True)
    assert s.place("a", -1, labels) == Begin("a")
