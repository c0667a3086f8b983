"""web: an HTTP server that can be split across user-owned processes.

A resource tree (:class:`Resource`, :class:`File`) served by
:class:`HTTPServer` over h11; a front server relays ``/NAME.twistd/`` to the
personal servers users run themselves, over PB.  See docs/web.md.
"""

from ._core import HTTPError, NoResource, Request, Resource, error_page, http_date
from ._http import HTTPLimits, HTTPMachine
from ._server import HTTPServer, serve_http
from ._static import File

__all__ = [
    "HTTPError",
    "HTTPLimits",
    "HTTPMachine",
    "File",
    "HTTPServer",
    "NoResource",
    "Request",
    "Resource",
    "error_page",
    "http_date",
    "serve_http",
]
