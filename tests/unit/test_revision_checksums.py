"""Checksums of applied revisions in the version table's comment: the format and the bookkeeping."""

from __future__ import annotations

from ansible.module_utils.revision_checksums import MARKER, comment_text, compare, parse_comment, updated

FILES = {"a1": {"path": "versions/a1.py", "sha256": "11" * 32}, "b2": {"path": "versions/b2.py", "sha256": "22" * 32}}


def test_the_comment_keeps_the_teams_own_text_and_round_trips():
    text = comment_text("Owned by the platform team.", {"b2": "22" * 32, "a1": "11" * 32})
    assert text.startswith("Owned by the platform team.\n\n" + MARKER)
    assert parse_comment(text) == ("Owned by the platform team.", {"a1": "11" * 32, "b2": "22" * 32})
    assert parse_comment(comment_text("", {"a1": "x"})) == ("", {"a1": "x"})


def test_a_comment_without_our_record_or_with_a_broken_one_has_no_checksums():
    assert parse_comment(None) == ("", {})
    assert parse_comment("Just a note") == ("Just a note", {})
    broken = f"note\n\n{MARKER} {{not json"
    assert parse_comment(broken) == (broken, {})  # not ours after all: kept as the team's text
    assert parse_comment(f"{MARKER} [1, 2]") == (f"{MARKER} [1, 2]", {})


def test_a_team_comment_that_quotes_the_marker_is_kept_whole():
    own = f"We use {MARKER} for audits"
    assert parse_comment(own) == (own, {})
    assert parse_comment(comment_text(own, {"a1": "11" * 32})) == (own, {"a1": "11" * 32})


def test_compare_finds_edited_and_missing_revisions():
    found = compare(FILES, {"a1": "99" * 32})
    assert found["matching"] == 0 and found["missing"] == ["b2"]
    assert found["edited"] == [{"revision": "a1", "path": "versions/a1.py", "recorded": "99" * 32,
                                "actual": "11" * 32}]
    assert compare(FILES, {"a1": "11" * 32, "b2": "22" * 32}) == {"matching": 2, "missing": [], "edited": []}


def test_a_run_records_what_it_applied_backfills_the_rest_and_never_overwrites_an_edit():
    keep, changes = updated(FILES, {"a1": "99" * 32, "gone": "00" * 32}, applied_now=["b2"], accept_edited=[])
    assert keep == {"a1": "99" * 32, "b2": "22" * 32}  # the edited a1 keeps its recorded checksum
    assert changes == {"recorded": ["b2"], "backfilled": [], "accepted": [], "removed": ["gone"]}
    keep, changes = updated(FILES, {}, applied_now=[], accept_edited=[])
    assert keep == {"a1": "11" * 32, "b2": "22" * 32} and changes["backfilled"] == ["a1", "b2"]


def test_an_edit_accepted_after_review_records_the_new_checksum():
    keep, changes = updated(FILES, {"a1": "99" * 32, "b2": "22" * 32}, applied_now=[], accept_edited=["a1"])
    assert keep["a1"] == "11" * 32 and changes["accepted"] == ["a1"]


def test_nothing_to_change_changes_nothing():
    recorded = {"a1": "11" * 32, "b2": "22" * 32}
    keep, changes = updated(FILES, recorded, applied_now=[], accept_edited=["a1"])
    assert keep == recorded and not any(changes.values())
