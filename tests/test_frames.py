"""The server's frames (hived/server/frames.py), read back by an independent peer: the
``websockets`` library's sans-IO parser."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from hived.server.frames import text_frame


def parse(data: bytes) -> list[Frame]:
    """The frames in ``data``, as the ``websockets`` library reads a server's frames."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
        else:
            raise AssertionError("a frame was cut short")
    return frames


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
def test_a_text_frame_of_each_length_form_parses_back(size: int) -> None:
    text = "x" * size
    [frame] = parse(text_frame(text))
    assert (frame.opcode, frame.fin, frame.rsv1, frame.rsv2, frame.rsv3) == (
        Opcode.TEXT,
        True,
        False,
        False,
        False,
    )
    assert frame.data == text.encode()


def test_a_text_frame_counts_utf8_bytes_not_characters() -> None:
    text = "é€😀" * 30  # 90 characters, 270 bytes: the 126 form
    data = text_frame(text)
    assert data[1] == 126
    [frame] = parse(data)
    assert bytes(frame.data).decode() == text


def test_the_same_text_object_is_framed_once_and_an_equal_one_alike() -> None:
    text = "".join(["fan", "-out"])
    assert text_frame(text) is text_frame(text)
    assert text_frame("".join(["fan-", "out"])) == text_frame(text)
