"""The incremental tracker's bookkeeping without a database: what a count proves, when
the background counts or re-scans, and what survives a restart (the state file)."""

from __future__ import annotations

from pathlib import Path

from trafficd.replication.incremental import (
    NO_END,
    Tracker,
    add_counts,
    zero_counts,
)

T0 = 1_800_000_000.0


def confirmed_tracker() -> Tracker:
    """A tracker whose first re-scan ended at T0, confirmed as of its count."""
    t = Tracker(fingerprint="f", snapshot="10:10:")
    count = t.start_count(T0)
    found = zero_counts()
    found["placements"] = [2, 3, 4, 18]
    assert not t.end_count(count, "10:10:", found, rescan=True)  # the first: nothing to compare
    page = t.start_page(T0, 100, 0)
    assert page.high == NO_END
    assert t.end_page(page, {1 << 9: (2, 300)}, T0)
    return t


def test_a_rescan_confirms_the_figures_as_of_its_count() -> None:
    t = confirmed_tracker()
    assert t.live == {1 << 9: (2, 300)}
    assert (t.confirmed_at, t.confirmed_snapshot) == (T0, "10:10:")
    assert not t.stale and t.stale_note() is None
    t.snapshot = "10:12:"  # a round after a transaction ended: not proven any more
    assert t.stale and "every insert is counted" in (t.stale_note() or "")


def test_a_count_that_finds_what_the_rounds_expect_confirms_and_one_that_does_not_rescans() -> None:
    t = confirmed_tracker()
    t.snapshot = "10:12:"
    add_counts(t.expected, {**zero_counts(), "placements": [1, 5, 6, 10]})  # a round's row
    count = t.start_count(T0 + 400)
    add_counts(t.expected, {**zero_counts(), "placements": [1, 7, 6, 10]})  # read meanwhile
    found = zero_counts()
    found["placements"] = [3, 8, 10, 28]  # the first two rows and the one of the round
    assert t.end_count(count, "10:12:", found)
    assert (t.confirmed_at, t.confirmed_snapshot, t.rescan) == (T0 + 400, "10:12:", None)
    assert t.expected["placements"] == [4, 15, 16, 38]  # what it found, and the row since
    count = t.start_count(T0 + 800)
    found["placements"] = [3, 10, 12, 30]  # one row fewer, one more: not what was expected
    assert not t.end_count(count, "10:13:", found)
    assert t.unseen_at == T0 + 800 and t.rescan is not None and t.stale
    assert "a re-scan is reading them" in (t.stale_note() or "")
    assert t.confirmed_at == T0 + 400  # until the re-scan ends
    page = t.start_page(T0 + 801, 100, 0)
    assert t.end_page(page, {}, T0 + 900)
    assert (t.confirmed_at, t.confirmed_snapshot) == (T0 + 800, "10:13:")
    assert t.to_json()["unseen_at"] is None


def test_what_the_background_does_and_when() -> None:
    t = confirmed_tracker()

    def due(now: float) -> str | None:
        return t.due(now, interval=60, confirm_interval=300, rescan_interval=3600)

    assert due(T0 + 10) is None  # nothing ended since the confirmation
    t.snapshot = "10:12:"  # a transaction ended: a count, confirm_interval after the last
    assert due(T0 + 299) is None and due(T0 + 300) == "count"
    t.changes += 1  # PostgreSQL's counters show a delete: a count sooner
    assert due(T0 + 59) is None and due(T0 + 60) == "count"
    assert due(T0 + 3600) == "rescan"
    t.start_count(T0 + 60)
    assert due(T0 + 61) is None  # the counters' hint is taken by the count
    t.unseen_at = T0 + 61
    assert due(T0 + 62) == "rescan"


def test_the_state_survives_a_restart(tmp_path: Path) -> None:
    t = confirmed_tracker()
    t.snapshot = "10:12:"
    add_counts(t.expected, {**zero_counts(), "storages": [1, 9, 4096]})
    count = t.start_count(T0 + 400)
    t.end_count(count, "10:12:", t.expected, rescan=True)  # a re-scan runs
    path = tmp_path / "state.json"
    t.save(path, T0 + 401)
    again = Tracker.load(path)
    assert again is not None
    assert again.to_json() == t.to_json()
    assert again.rescan is not None and again.rescan.confirms_at == T0 + 400
    path.write_text(path.read_text().replace('"version":2', '"version":1'))
    assert Tracker.load(path) is None  # another version's state: start afresh
