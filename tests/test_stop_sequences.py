"""Stop sequences the gateway applies itself, to whole answers and to streams."""

import pytest

from completions.stop import StopFilter, cut_at_stop


def _stream(stops, pieces):
    """Return what a client receives of the streamed pieces, delta by delta, then the rest."""
    stop_filter = StopFilter(stops)
    sent = [stop_filter.feed(piece) for piece in pieces]
    sent.append(stop_filter.flush())
    return sent, stop_filter.stopped


def test_it_cuts_an_answer_before_the_stop_sequence():
    assert cut_at_stop("one two three", [" three"]) == ("one two", True)


def test_it_leaves_an_answer_without_a_stop_sequence_whole():
    assert cut_at_stop("one two three", ["four"]) == ("one two three", False)


def test_it_cuts_at_the_earliest_of_several_stop_sequences():
    assert cut_at_stop("a. b! c.", ["!", "."]) == ("a", True)


def test_it_cuts_to_nothing_when_the_answer_starts_with_a_stop_sequence():
    assert cut_at_stop("\n\nhello", ["\n\n"]) == ("", True)


def test_it_passes_a_stream_without_stop_sequences_through_at_once():
    sent, stopped = _stream(["END"], ["one", " two", " three"])

    assert sent == ["one", " two", " three", ""]
    assert stopped is False


def test_it_ends_a_stream_at_a_stop_sequence_inside_one_delta():
    sent, stopped = _stream(["END"], ["one", " twoEND three", " four"])

    assert "".join(sent) == "one two"
    assert sent[2:] == ["", ""]
    assert stopped is True


def test_it_finds_a_stop_sequence_split_across_deltas():
    sent, stopped = _stream(["END"], ["one E", "N", "D two"])

    assert "".join(sent) == "one "
    assert stopped is True


def test_it_holds_back_only_what_could_start_a_stop_sequence():
    stop_filter = StopFilter(["END"])

    assert stop_filter.feed("one E") == "one "
    assert stop_filter.feed("Nx") == "ENx"


def test_it_sends_held_back_text_when_the_stream_ends_without_the_stop_sequence():
    sent, stopped = _stream(["END"], ["one", " EN"])

    assert sent == ["one", " ", "EN"]
    assert stopped is False


def test_it_holds_back_the_longest_possible_start_of_any_stop_sequence():
    stop_filter = StopFilter(["xyz", "abcd"])

    assert stop_filter.feed("hello abc") == "hello "
    assert stop_filter.feed("d") == ""
    assert stop_filter.stopped is True


def test_it_sends_nothing_after_it_stopped():
    stop_filter = StopFilter(["."])

    assert stop_filter.feed("Done. More") == "Done"
    assert stop_filter.feed(" text.") == ""
    assert stop_filter.flush() == ""


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_it_gives_a_stream_the_same_text_as_a_whole_answer(size):
    text = "The quick brown fox.\n\nObservation: it jumps"
    stops = ["\n\nObservation:", "lazy dog"]
    pieces = [text[i : i + size] for i in range(0, len(text), size)]

    sent, stopped = _stream(stops, pieces)

    assert ("".join(sent), stopped) == cut_at_stop(text, stops)
