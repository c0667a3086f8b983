"""``File``: serve a directory tree, and nothing outside it.

Every request path is checked twice.  Each decoded segment is refused if it
could step anywhere but down (``..``, ``.``, an encoded ``/`` or ``\\``, a
NUL, bytes that are not UTF-8); then the joined path is resolved with
``os.path.realpath`` and must still lie inside the resolved root, so a
symlink that points outside the root is refused too.  The final open uses
``O_NOFOLLOW``, so a symlink swapped in after the check is not followed.
"""

from __future__ import annotations

import email.utils
import errno
import functools
import html
import io
import mimetypes
import os
import stat
from typing import Any
from urllib.parse import quote

from ._core import SMALL_FILE, HTTPError, Request, Resource, http_date, read_span

__all__ = ["File"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC
# O_NONBLOCK: a FIFO someone put in the tree must not block the event loop
# in open(); it is refused afterwards, as everything but a regular file is.
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)


@functools.lru_cache(maxsize=4096)
def _http_date_cached(when: int) -> str:
    return http_date(when)

_BAD_CHARS = ("/", "\\", "\0")


def _safe_segment(segment: str) -> bool:
    if segment in (".", ".."):
        return False
    if any(ch in segment for ch in _BAD_CHARS):
        return False
    try:
        segment.encode("utf-8")  # surrogate escapes: the bytes were not UTF-8
    except UnicodeEncodeError:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _type_for(suffixes: str) -> tuple[str, str | None]:
    ctype, encoding = mimetypes.guess_type("x" + suffixes)
    if ctype is None:
        ctype = "application/octet-stream"
    elif ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
        ctype += "; charset=utf-8"
    return ctype, encoding


def _content_type(path: str) -> tuple[str, str | None]:
    """MIME type and encoding by file name, cached by the name's last two
    suffixes (``.tar.gz``)."""
    name = os.path.basename(path).lower()
    parts = name.split(".")
    return _type_for("." + ".".join(parts[-2:]) if len(parts) > 2 else
                     ("." + parts[-1] if len(parts) > 1 else ""))


def _parse_range(value: str, size: int) -> tuple[int, int] | None | str:
    """A single ``bytes=`` range as (start, end inclusive); None to ignore
    the header (several ranges, another unit, bad syntax); "unsatisfiable"."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            if not last.isdigit():
                return None
            length = int(last)
            if length == 0:
                return "unsatisfiable"
            return max(0, size - length), size - 1
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        return "unsatisfiable"
    if end < start:
        return None
    return start, min(end, size - 1)


class File(Resource):
    """A static directory (or a single file) with MIME types,
    ``index.html``, an escaped directory listing, single ``Range``
    requests, ``ETag``/``If-None-Match`` and ``Last-Modified``/
    ``If-Modified-Since``; bodies go out with ``sendfile`` where possible."""

    is_leaf = True

    def __init__(self, path: str | os.PathLike[str], *, index_names: tuple[str, ...] = ("index.html",),
                 listing: bool = True) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.index_names = index_names
        self.listing = listing
        self._real_root: str | None = None

    def allowed_methods(self) -> list[str]:
        return ["GET", "HEAD"]

    def _root(self) -> str:
        # Resolved once: the root is configuration, and resolving it costs
        # a system call per path component on every request.
        if self._real_root is None:
            self._real_root = os.path.realpath(self.path)
        return self._real_root

    def _segments(self, request: Request) -> tuple[list[str], bool]:
        """The checked path segments and whether the URL ended with a slash."""
        segments = list(request.postpath)
        trailing = bool(segments) and segments[-1] == ""
        if trailing:
            segments.pop()
        for segment in segments:
            if not _safe_segment(segment):
                raise HTTPError(404, f"no such file: {request.path}")
        return segments, trailing or (not segments and request.path.endswith("/"))

    def _open(self, segments: list[str]) -> int:
        """A descriptor for root/segments, never outside the root.

        Fast path: walk down from the root with ``O_NOFOLLOW`` on every
        component, so no symlink is followed at all.  A symlink on the way
        (ELOOP) takes the slow path: resolve the whole path and check that
        it is still under the resolved root."""
        root = self._root()
        try:
            dir_fd = os.open(root, _DIR_FLAGS)
        except NotADirectoryError:
            dir_fd = -1  # File over a single file: the slow path below
        try:
            if dir_fd < 0:
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", root)
            for segment in segments[:-1]:
                next_fd = os.open(segment, _DIR_FLAGS | _NOFOLLOW, dir_fd=dir_fd)
                os.close(dir_fd)
                dir_fd = next_fd
            if not segments:
                return os.dup(dir_fd)
            return os.open(segments[-1], _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        finally:
            if dir_fd >= 0:
                os.close(dir_fd)
        target = os.path.realpath(os.path.join(root, *segments))
        if target != root and not target.startswith(root.rstrip(os.sep) + os.sep):
            raise FileNotFoundError(target)
        return os.open(target, _FILE_FLAGS)

    async def render(self, request: Request) -> Any:
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(405, f"{request.method} is not allowed on static files",
                            [("Allow", "GET, HEAD")])
        segments, slash = self._segments(request)
        try:
            fd = self._open(segments)
        except OSError:
            raise HTTPError(404, f"no such file: {request.path}") from None
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                if not slash:
                    location = quote(request.root_path + request.path,
                                     safe="/%:@!$&'()*+,;=~") + "/"
                    if request.query:
                        location += "?" + request.query
                    body = f'<a href="{html.escape(location)}">moved here</a>'.encode()
                    await request.respond(301, body, headers=[("Location", location)])
                    return None
                for name in self.index_names:
                    try:
                        index_fd = self._open(segments + [name])
                    except OSError:
                        continue
                    try:
                        index_info = os.fstat(index_fd)
                        if stat.S_ISREG(index_info.st_mode):
                            return await self._send(request, index_fd, index_info, name)
                    finally:
                        os.close(index_fd)
                if not self.listing:
                    raise HTTPError(404, f"no index in {request.path}")
                return self._listing(request, fd)
            if not stat.S_ISREG(info.st_mode) or (slash and segments):
                raise HTTPError(404, f"no such file: {request.path}")
            return await self._send(request, fd, info, segments[-1] if segments else self.path)
        finally:
            os.close(fd)

    def _listing(self, request: Request, directory_fd: int) -> bytes:
        try:
            with os.scandir(directory_fd) as entries:
                found = sorted((entry.name, entry.is_dir()) for entry in entries)
        except OSError:
            raise HTTPError(404, f"cannot list {request.path}") from None
        title = html.escape(request.path)
        rows = []
        for name, is_dir in found:
            shown = name + ("/" if is_dir else "")
            href = quote(shown, safe="/")
            rows.append(f'<li><a href="{html.escape(href, quote=True)}">'
                        f"{html.escape(shown)}</a></li>")
        page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Index of {title}'
                f"</title></head>\n<body><h1>Index of {title}</h1>\n<ul>\n"
                + "\n".join(rows) + "\n</ul></body></html>\n")
        return page.encode("utf-8", "surrogateescape")

    async def _send(self, request: Request, fd: int, info: os.stat_result, name: str) -> None:
        size = info.st_size
        etag = f'"{info.st_mtime_ns:x}-{size:x}"'
        mtime = int(info.st_mtime)
        ctype, encoding = _content_type(name)
        # Fresh response headers: appended, not set (set_header scans the list).
        headers = request.response_headers
        headers.append(("ETag", etag))
        headers.append(("Last-Modified", _http_date_cached(mtime)))
        headers.append(("Accept-Ranges", "bytes"))
        if self._not_modified(request, etag, mtime):
            request.set_status(304)
            await request.finish()
            return None
        headers.append(("Content-Type", ctype))
        if encoding:
            headers.append(("Content-Encoding", encoding))
        start, end = 0, size - 1
        header = request.get_header("range")
        if header is not None and size and self._range_applies(request, etag, mtime):
            parsed = _parse_range(header, size)
            if parsed == "unsatisfiable":
                raise HTTPError(416, f"the range {header!r} is outside the file ({size} bytes)",
                                [("Content-Range", f"bytes */{size}")])
            if isinstance(parsed, tuple):
                start, end = parsed
                request.set_status(206)
                headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        count = end - start + 1 if size else 0
        headers.append(("Content-Length", str(count)))
        if count <= SMALL_FILE:
            # Read from the page cache and written with the head: cheaper
            # than sendfile's machinery for a small page.
            await request.write(read_span(fd, start, count) if count else b"")
        else:
            with io.FileIO(fd, closefd=False) as file:
                await request.send_file(file, start, count)
        await request.finish()
        return None

    @staticmethod
    def _not_modified(request: Request, etag: str, mtime: int) -> bool:
        inm = request.get_header("if-none-match")
        if inm is not None:
            tags = [t.strip() for t in inm.split(",")]
            return "*" in tags or etag in tags or ("W/" + etag) in tags
        ims = request.get_header("if-modified-since")
        if ims is not None:
            try:
                when = email.utils.parsedate_to_datetime(ims).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                return False
            return mtime <= when
        return False

    @staticmethod
    def _range_applies(request: Request, etag: str, mtime: int) -> bool:
        if_range = request.get_header("if-range")
        if if_range is None:
            return True
        if if_range.startswith('"') or if_range.startswith("W/"):
            return if_range == etag
        try:
            return int(email.utils.parsedate_to_datetime(if_range).timestamp()) == mtime
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
