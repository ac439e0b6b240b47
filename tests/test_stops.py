from __future__ import annotations

from webui.core.stops import StopStringMatcher


def run(stops: list[str], deltas: list[str]) -> tuple[str, StopStringMatcher]:
    matcher = StopStringMatcher(stops)
    shown = "".join(matcher.feed(d) for d in deltas)
    return shown + matcher.flush(), matcher


def test_stop_split_over_chunks_is_never_shown() -> None:
    shown, matcher = run(["\nYou:"], ["Hello", " there\n", "Yo", "u:", " more"])
    assert shown == "Hello there"
    assert matcher.stopped and matcher.matched == "\nYou:"


def test_partial_match_that_does_not_complete_is_released() -> None:
    shown, matcher = run(["\nYou:"], ["a\nYo", "ghurt"])
    assert shown == "a\nYoghurt"
    assert not matcher.stopped


def test_text_is_held_only_while_it_could_be_a_stop() -> None:
    matcher = StopStringMatcher(["###"])
    assert matcher.feed("abc#") == "abc"
    assert matcher.feed("#") == ""
    assert matcher.feed("x") == "##x"


def test_earliest_of_several_stops_wins() -> None:
    shown, matcher = run(["END", "\n\n"], ["one\n", "\ntwo END"])
    assert shown == "one"
    assert matcher.matched == "\n\n"


def test_no_stops_passes_everything_through() -> None:
    shown, _ = run([], ["a", "b"])
    assert shown == "ab"


def test_stop_in_one_chunk_cuts_the_rest_and_later_chunks() -> None:
    matcher = StopStringMatcher(["</s>"])
    assert matcher.feed("yes</s>no") == "yes"
    assert matcher.feed("more") == ""
    assert matcher.flush() == ""
