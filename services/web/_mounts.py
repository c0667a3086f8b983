"""Resource trees that other services mount into a web site under a prefix.

:class:`MountedRoot` sits in front of a site's own root.  A request whose
path starts with a mounted prefix (``/words/``) goes to the mounted tree;
everything else goes to the site as before.  The table is looked up at each
request, so mounts made or removed while the server runs take effect on the
next request, with no restart.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

from ._core import Request, Resource, traverse

__all__ = ["MountedRoot", "mount_prefix"]


def mount_prefix(path: str) -> tuple[str, ...]:
    """``"/words/"`` (or ``"/words"``, ``"/admin/words/"``) to its segments.

    Refuses the site root and anything that could not be a plain path:
    empty, ``.``/``..``, or a segment with ``%``, ``?``, ``#``, a backslash,
    NUL or other control characters.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"a mount path starts with '/', got {path!r}")
    segments = tuple(path.strip("/").split("/"))
    if segments == ("",):
        raise ValueError("cannot mount at '/': that is the site itself")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(f"mount path {path!r} has an empty, '.' or '..' segment")
        if any(ch in "%?#\\" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in segment):
            raise ValueError(f"mount path {path!r} has a character that is not allowed "
                             f"in a mount prefix (%, ?, #, backslash or a control character)")
    return segments


class MountedRoot(Resource):
    """The site's root with a table of mounted prefixes in front of it."""

    is_leaf = True  # it routes the whole path itself, in render()

    def __init__(self, site: Resource) -> None:
        super().__init__()
        self.site = site
        self.mounts: dict[tuple[str, ...], Resource] = {}

    def mount(self, path: str, resource: Resource) -> tuple[str, ...]:
        if not isinstance(resource, Resource):
            raise TypeError(f"mount a services.web.Resource, not a {type(resource).__name__}")
        prefix = mount_prefix(path)
        if prefix in self.mounts:
            raise ValueError(f"{_shown(prefix)} is already mounted; unmount it first")
        self.mounts[prefix] = resource
        return prefix

    def unmount(self, path: str) -> Resource | None:
        return self.mounts.pop(mount_prefix(path), None)

    def _match(self, postpath: list[str]) -> tuple[str, ...] | None:
        # Longest prefix first, so /a/b/ wins over /a/ for /a/b/c.
        best: tuple[str, ...] | None = None
        for prefix in self.mounts:
            n = len(prefix)
            if (len(postpath) >= n and tuple(postpath[:n]) == prefix
                    and (best is None or n > len(best))):
                best = prefix
        return best

    async def render(self, request: Request) -> Any:
        prefix = self._match(request.postpath) if self.mounts else None
        if prefix is None:
            return await traverse(self.site, request).render(request)
        if len(request.postpath) == len(prefix):
            # "/words" without its slash: send the client to "/words/", so
            # that the mounted tree's relative links resolve under it.
            location = request.root_path + _shown(prefix)
            if request.query:
                location += "?" + request.query
            request.set_status(301)
            request.set_header("Location", location)
            return f'<a href="{html.escape(location)}">moved here</a>\n'
        for _ in prefix:
            request.prepath.append(request.postpath.pop(0))
            request.raw_prepath.append(request.raw_postpath.pop(0))
        resource = self.mounts[prefix]
        if (request.postpath == [""] and not resource.is_leaf
                and resource.get_child("", request) is None):
            # "/words/" on a tree without an index child: the tree's root
            # answers, so a single page can be mounted as it is.
            return await resource.render(request)
        return await traverse(resource, request).render(request)


def _shown(prefix: tuple[str, ...]) -> str:
    return "/" + "/".join(quote(s) for s in prefix) + "/"
