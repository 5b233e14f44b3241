"""TextStream: whole UTF-8 characters only, stop sequences cut out and never leaked."""

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
