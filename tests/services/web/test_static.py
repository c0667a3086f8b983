"""File: static files, listings, conditional and range requests, and
nothing outside the root."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from services.web import File, Resource

from ._helpers import get, port_of, raw_exchange, running, status_of


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "hello.txt").write_text("hello, world\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 4)
    (root / "sub" / "a <b>&c.txt").write_text("odd name")
    (root / "sub" / "page.css").write_text("p {}")
    (tmp_path / "secret.txt").write_text("top secret")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    (root / "escape-dir").symlink_to(tmp_path)
    (root / "inside").symlink_to(root / "hello.txt")
    return root


async def test_files_have_mime_types_and_validators(site: Path) -> None:
    async with running(File(site)) as server:
        status, headers, body = await get(port_of(server), "/hello.txt")
        assert (status, body) == (200, b"hello, world\n")
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert headers["etag"].startswith('"') and headers["last-modified"].endswith("GMT")
        assert headers["accept-ranges"] == "bytes"
        status, headers, _ = await get(port_of(server), "/sub/page.css")
        assert headers["content-type"].startswith("text/css")
        status, headers, _ = await get(port_of(server), "/data.bin")
        assert headers["content-type"] == "application/octet-stream"


async def test_index_html_and_the_redirect_to_a_directory_slash(site: Path) -> None:
    async with running(File(site)) as server:
        port = port_of(server)
        assert (await get(port, "/"))[2] == b"<h1>home</h1>"
        status, headers, _ = await get(port, "/sub?x=1")
        assert status == 301 and headers["location"] == "/sub/?x=1"


async def test_the_directory_listing_is_escaped(site: Path) -> None:
    async with running(File(site)) as server:
        status, _, body = await get(port_of(server), "/sub/")
        assert status == 200
        assert b"a &lt;b&gt;&amp;c.txt" in body and b"<b>" not in body
        assert b'href="a%20%3Cb%3E%26c.txt"' in body


async def test_if_none_match_and_if_modified_since_give_304(site: Path) -> None:
    async with running(File(site)) as server:
        port = port_of(server)
        _, headers, _ = await get(port, "/hello.txt")
        status, _, body = await get(port, "/hello.txt", headers={"If-None-Match": headers["etag"]})
        assert (status, body) == (304, b"")
        status, _, _ = await get(port, "/hello.txt", headers={"If-None-Match": '"other"'})
        assert status == 200
        status, _, _ = await get(port, "/hello.txt",
                                 headers={"If-Modified-Since": headers["last-modified"]})
        assert status == 304
        status, _, _ = await get(port, "/hello.txt",
                                 headers={"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"})
        assert status == 200
        status, _, _ = await get(port, "/hello.txt", headers={"If-Modified-Since": "garbage"})
        assert status == 200


@pytest.mark.parametrize(("header", "status", "expected", "content_range"), [
    ("bytes=0-9", 206, bytes(range(10)), "bytes 0-9/1024"),
    ("bytes=1020-", 206, bytes(range(252, 256)), "bytes 1020-1023/1024"),
    ("bytes=-3", 206, bytes(range(253, 256)), "bytes 1021-1023/1024"),
    ("bytes=1000-5000", 206, (bytes(range(256)) * 4)[1000:], "bytes 1000-1023/1024"),
    ("bytes=1023-1023", 206, b"\xff", "bytes 1023-1023/1024"),
    ("bytes=1024-", 416, None, "bytes */1024"),
    ("bytes=-0", 416, None, "bytes */1024"),
    ("bytes=0-1,5-6", 200, bytes(range(256)) * 4, None),   # several ranges: whole file
    ("items=0-1", 200, bytes(range(256)) * 4, None),
    ("bytes=x-y", 200, bytes(range(256)) * 4, None),
])
async def test_single_ranges(site: Path, header: str, status: int, expected: bytes | None,
                             content_range: str | None) -> None:
    async with running(File(site)) as server:
        got, headers, body = await get(port_of(server), "/data.bin", headers={"Range": header})
        assert got == status
        assert headers.get("content-range") == content_range
        if expected is not None:
            assert body == expected


async def test_if_range_with_a_stale_etag_sends_the_whole_file(site: Path) -> None:
    async with running(File(site)) as server:
        status, _, body = await get(port_of(server), "/data.bin",
                                    headers={"Range": "bytes=0-1", "If-Range": '"stale"'})
        assert status == 200 and len(body) == 1024


TRAVERSALS = [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/sub/..%2f..%2fsecret.txt",
    "/sub/%2e%2e%2f%2e%2e%2fsecret.txt",
    "/..%5csecret.txt",
    "/sub\\..\\..\\secret.txt",
    "/hello.txt%00.html",
    "/escape",
    "/escape-dir/secret.txt",
    "/escape-dir/",
    "/./../secret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/%ff",
    "//etc/passwd",
    "/sub/../../secret.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_nothing_outside_the_root_is_served(site: Path, path: str) -> None:
    async with running(File(site)) as server:
        # raw bytes: http.client and curl would normalise some of these
        out = await raw_exchange(port_of(server),
                                 b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                 % path.encode())
        assert status_of(out) in (400, 404), out[:200]
        assert b"top secret" not in out


async def test_a_symlink_inside_the_root_is_served(site: Path) -> None:
    async with running(File(site)) as server:
        assert (await get(port_of(server), "/inside"))[2] == b"hello, world\n"


async def test_only_get_and_head_are_allowed(site: Path) -> None:
    async with running(File(site)) as server:
        status, headers, _ = await get(port_of(server), "/hello.txt", "POST", b"x")
        assert status == 405 and headers["allow"] == "GET, HEAD"
        status, headers, body = await get(port_of(server), "/hello.txt", "HEAD")
        assert status == 200 and body == b"" and headers["content-length"] == "13"


async def test_a_large_file_goes_out_whole_under_a_file_mounted_in_a_tree(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 17)
    (big / "blob").write_bytes(data)
    root = Resource()
    root.put_child("static", File(big))
    async with running(root) as server:
        status, _, body = await get(port_of(server), "/static/blob")
        assert status == 200 and body == data
        status, _, body = await get(port_of(server), "/static/blob",
                                    headers={"Range": "bytes=1000000-1000009"})
        assert status == 206 and body == data[1000000:1000010]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_fetches_files_and_ranges(site: Path) -> None:
    async with running(File(site)) as server:
        url = f"http://127.0.0.1:{port_of(server)}"
        proc = await asyncio.create_subprocess_exec(
            "curl", "-s", "--path-as-is", "-r", "0-4", f"{url}/hello.txt",
            "-o", "-", "--next", "-s", "--path-as-is", f"{url}/../secret.txt",
            stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        assert out.startswith(b"hello") and b"top secret" not in out
        assert b"404 Not Found" in out


async def test_large_files_go_out_with_sendfile_and_small_ones_in_one_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        calls.append(count)
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", counting)
    (tmp_path / "large").write_bytes(os.urandom(1 << 20))
    (tmp_path / "small").write_bytes(b"s" * 1000)
    async with running(File(tmp_path)) as server:
        assert len((await get(port_of(server), "/large"))[2]) == 1 << 20
        assert calls, "sendfile was not used for a 1 MiB file"
        calls.clear()
        assert (await get(port_of(server), "/small"))[2] == b"s" * 1000
        assert calls == []


async def test_a_file_resource_over_a_single_file(site: Path) -> None:
    async with running(File(site / "hello.txt")) as server:
        assert (await get(port_of(server), "/"))[2] == b"hello, world\n"
        assert (await get(port_of(server), "/x"))[0] == 404


async def test_a_fifo_in_the_tree_is_refused_without_blocking(site: Path) -> None:
    os.mkfifo(site / "pipe")
    async with running(File(site)) as server:
        status, _, _ = await asyncio.wait_for(get(port_of(server), "/pipe"), 5)
        assert status == 404
        assert (await get(port_of(server), "/hello.txt"))[0] == 200
