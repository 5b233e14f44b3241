"""TextStream: whole UTF-8 characters only, stop sequences cut out and never leaked."""

import pytest

from shared.llama.text_stream import TextStream


def test_releases_text_without_stops() -> None:
    stream = TextStream()
    assert stream.push(b"Hello") == "Hello"
    assert stream.push(b" world") == " world"
    assert stream.flush() == ""
    assert stream.text == "Hello world"


def test_split_utf8_character_waits_for_its_last_byte() -> None:
    stream = TextStream()
    data = "é".encode()
    assert stream.push(data[:1]) == ""
    assert stream.push(data[1:]) == "é"


def test_stop_sequence_is_cut_and_sets_stopped() -> None:
    stream = TextStream(stop=("\nQ:",))
    released = stream.push(b"The answer is 5.") + stream.push(b"\n") + stream.push(b"Q") + stream.push(b": next")
    assert stream.stopped
    assert released + stream.flush() == "The answer is 5."
    assert stream.text == "The answer is 5."


def test_prefix_of_stop_is_held_back_then_released() -> None:
    stream = TextStream(stop=("END",))
    assert stream.push(b"abc E") == "abc "
    assert stream.push(b"N") == ""
    assert stream.push(b"x") == "ENx"
    assert not stream.stopped


def test_earliest_of_several_stops_wins() -> None:
    stream = TextStream(stop=("zz", "b"))
    stream.push(b"a b zz")
    assert stream.stopped and stream.text == "a "


def test_a_stop_sequence_that_begins_in_the_context_ends_the_output() -> None:
    stream = TextStream(stop=("\nQ:",))
    stream.seed("The answer is 5.\n")  # the guidance ended the line; the student starts the next question
    assert stream.push(b"Q") == ""
    assert stream.push(b": what next?") == ""
    assert stream.stopped and stream.text == "" and stream.flush() == ""


def test_the_context_is_never_released_and_unrelated_output_flows() -> None:
    stream = TextStream(stop=("\nQ:",))
    stream.seed("The answer is 5.\n")
    assert stream.push(b"So") + stream.push(b" five.") == "So five."
    assert stream.text == "So five." and not stream.stopped


def test_the_context_is_set_before_any_output() -> None:
    stream = TextStream(stop=("x",))
    stream.push(b"a")
    with pytest.raises(RuntimeError, match="before its output"):
        stream.seed("b")


def test_it_knows_when_it_stands_inside_a_character() -> None:
    stream = TextStream()
    data = "龘".encode()
    assert not stream.inside_character
    assert stream.push(data[:1]) == "" and stream.inside_character
    assert stream.push(data[1:2]) == "" and stream.inside_character
    assert stream.push(data[2:]) == "龘" and not stream.inside_character
