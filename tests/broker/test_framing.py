import struct

import pytest

from broker._framing import _INITIAL_BUFFER, FrameReader, FrameTooLarge, encode_frame


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


def test_large_frame_grows_the_buffer_and_keeps_earlier_views_valid():
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


def receive_like_a_transport(reader, data, chunk):
    """Write ``data`` into the reader's buffers ``chunk`` bytes at a time."""
    for start in range(0, len(data), chunk):
        piece = data[start:start + chunk]
        while piece:
            buf = reader.get_buffer(-1)
            n = min(len(buf), len(piece))
            buf[:n] = piece[:n]
            reader.buffer_updated(n)
            piece = piece[n:]


def test_a_header_announcing_a_big_frame_reserves_nothing_and_memory_follows_the_bytes():
    # A peer that announces max_frame and trickles the body holds about
    # twice what it actually sent, not max_frame.
    reader = FrameReader(4 * 1024 * 1024)
    initial = _INITIAL_BUFFER
    receive_like_a_transport(reader, struct.pack(">I", 4 * 1024 * 1024) + b"x" * 10, 1)
    assert reader.next_frame() is None
    assert len(reader._buf) == initial
    sent = 14
    for _ in range(10):
        receive_like_a_transport(reader, b"y" * 50_000, 1000)
        sent += 50_000
        assert reader.next_frame() is None
        assert len(reader._buf) <= max(initial, 2 * sent + 4096)


def test_no_buffer_is_allocated_until_bytes_arrive():
    # An idle connection that never sends must cost no read buffer.
    reader = FrameReader(1024)
    assert len(reader._buf) == 0 and reader.next_frame() is None
    assert len(reader.get_buffer(-1)) >= _INITIAL_BUFFER
    reader2 = FrameReader(1024)
    reader2.feed(encode_frame(b"a"))
    assert frames_of(reader2) == [b"a"] and len(reader2._buf) == _INITIAL_BUFFER


def test_many_small_frames_reuse_the_buffer_without_growing():
    reader = FrameReader(1024)
    initial = _INITIAL_BUFFER
    data = encode_frame(b"z" * 100)
    for _ in range(10_000):
        receive_like_a_transport(reader, data, len(data))
        assert frames_of(reader) == [b"z" * 100]
    assert len(reader._buf) == initial


def test_a_big_frame_arrives_whole_through_transport_sized_reads():
    reader = FrameReader(8 * 1024 * 1024)
    body = bytes(range(256)) * 12_288  # 3 MiB
    receive_like_a_transport(reader, encode_frame(body) + encode_frame(b"after"), 65_536)
    assert frames_of(reader) == [body, b"after"]
