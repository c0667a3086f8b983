import struct

import pytest

from broker._framing import FrameReader, FrameTooLarge, encode_frame


def frames_of(reader):
    out = []
    while (frame := reader.next_frame()) is not None:
        out.append(bytes(frame))
        frame.release()
    return out


def test_frames_split_across_feeds_are_reassembled_byte_by_byte():
    reader = FrameReader(1024)
    data = encode_frame(b"hello") + encode_frame(b"") + encode_frame(b"world!")
    got = []
    for i in range(len(data)):
        reader.feed(data[i:i + 1])
        got.extend(frames_of(reader))
    assert got == [b"hello", b"", b"world!"]


def test_header_over_the_limit_is_refused_before_any_body_arrives():
    reader = FrameReader(100)
    reader.feed(struct.pack(">I", 0xFFFFFFFF))
    with pytest.raises(FrameTooLarge) as info:
        reader.next_frame()
    assert info.value.size == 0xFFFFFFFF
    assert "max_frame=100" in str(info.value)


def test_frame_exactly_at_the_limit_is_accepted_and_one_past_is_not():
    reader = FrameReader(100)
    reader.feed(encode_frame(b"x" * 100))
    assert frames_of(reader) == [b"x" * 100]
    reader.feed(encode_frame(b"x" * 101))
    with pytest.raises(FrameTooLarge):
        reader.next_frame()


def test_large_frame_grows_the_buffer_once_and_keeps_earlier_views_valid():
    reader = FrameReader(8 * 1024 * 1024)
    small = encode_frame(b"a" * 10)
    big_body = bytes(range(256)) * 4096  # 1 MiB
    reader.feed(small + encode_frame(big_body)[:1000])
    first = reader.next_frame()
    assert bytes(first) == b"a" * 10
    assert reader.next_frame() is None
    reader.feed(encode_frame(big_body)[1000:])
    assert bytes(first) == b"a" * 10  # the old buffer was not resized under the view
    second = reader.next_frame()
    assert bytes(second) == big_body


def test_get_buffer_and_buffer_updated_work_like_a_buffered_transport():
    reader = FrameReader(1024)
    data = encode_frame(b"abc") * 3
    buf = reader.get_buffer(-1)
    buf[:len(data)] = data
    reader.buffer_updated(len(data))
    assert frames_of(reader) == [b"abc"] * 3
