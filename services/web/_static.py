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
import functools
import html
import mimetypes
import os
import stat
from typing import Any
from urllib.parse import quote

from ._core import HTTPError, Request, Resource, http_date

__all__ = ["File"]

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

    def _resolve(self, request: Request) -> tuple[str, bool]:
        """The file system path for the request (and whether the URL ended
        with a slash); 404 for anything outside the root."""
        segments = list(request.postpath)
        trailing = bool(segments) and segments[-1] == ""
        if trailing:
            segments.pop()
        for segment in segments:
            if not _safe_segment(segment):
                raise HTTPError(404, f"no such file: {request.path}")
        root = self._root()
        target = os.path.realpath(os.path.join(root, *segments)) if segments else root
        if target != root and not target.startswith(root.rstrip(os.sep) + os.sep):
            raise HTTPError(404, f"no such file: {request.path}")
        return target, trailing or (not segments and request.path.endswith("/"))

    async def render(self, request: Request) -> Any:
        if request.method not in ("GET", "HEAD"):
            raise HTTPError(405, f"{request.method} is not allowed on static files",
                            [("Allow", "GET, HEAD")])
        target, slash = self._resolve(request)
        try:
            info = os.stat(target)
        except (FileNotFoundError, NotADirectoryError):
            raise HTTPError(404, f"no such file: {request.path}") from None
        except PermissionError:
            raise HTTPError(404, f"no such file: {request.path}") from None
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
                candidate = os.path.join(target, name)
                if os.path.isfile(candidate):
                    return await self._send(request, candidate)
            if not self.listing:
                raise HTTPError(404, f"no index in {request.path}")
            return self._listing(request, target)
        if slash and request.postpath:
            raise HTTPError(404, f"no such directory: {request.path}")
        return await self._send(request, target)

    def _listing(self, request: Request, directory: str) -> bytes:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            raise HTTPError(404, f"cannot list {request.path}") from None
        title = html.escape(request.path)
        rows = []
        for name in names:
            full = os.path.join(directory, name)
            shown = name + ("/" if os.path.isdir(full) else "")
            href = quote(shown, safe="/")
            rows.append(f'<li><a href="{html.escape(href, quote=True)}">'
                        f"{html.escape(shown)}</a></li>")
        page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Index of {title}'
                f"</title></head>\n<body><h1>Index of {title}</h1>\n<ul>\n"
                + "\n".join(rows) + "\n</ul></body></html>\n")
        return page.encode("utf-8", "surrogateescape")

    async def _send(self, request: Request, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            raise HTTPError(404, f"no such file: {request.path}") from None
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise HTTPError(404, f"not a regular file: {request.path}")
            size = info.st_size
            etag = f'"{info.st_mtime_ns:x}-{size:x}"'
            mtime = int(info.st_mtime)
            request.set_header("ETag", etag)
            request.set_header("Last-Modified", http_date(mtime))
            request.set_header("Accept-Ranges", "bytes")
            ctype, encoding = _content_type(path)
            request.set_header("Content-Type", ctype)
            if encoding:
                request.set_header("Content-Encoding", encoding)
            if self._not_modified(request, etag, mtime):
                request.set_status(304)
                request.response_headers = [(k, v) for k, v in request.response_headers
                                            if k not in ("Content-Type", "Content-Encoding")]
                await request.finish()
                return None
            start, end = 0, size - 1
            header = request.get_header("range")
            if header is not None and size and self._range_applies(request, etag, mtime):
                parsed = _parse_range(header, size)
                if parsed == "unsatisfiable":
                    raise HTTPError(416, f"the range {header!r} is outside the file "
                                         f"({size} bytes)",
                                    [("Content-Range", f"bytes */{size}")])
                if isinstance(parsed, tuple):
                    start, end = parsed
                    request.set_status(206)
                    request.set_header("Content-Range", f"bytes {start}-{end}/{size}")
            count = end - start + 1 if size else 0
            request.set_header("Content-Length", str(count))
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
