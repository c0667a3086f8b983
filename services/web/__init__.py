"""web: an HTTP server that can be split across user-owned processes.

A resource tree (:class:`Resource`, :class:`File`, :class:`ASGIResource`,
:class:`WSGIResource`) served by :class:`HTTPServer` over h11.  A front
(:class:`UserDirectory`) relays ``/NAME.twistd/`` over PB to the personal
servers users run themselves (:class:`Publisher`).  ``pb run web`` builds
either (:data:`plugin`).  See docs/web.md.
"""

from ._asgi import ASGIResource
from ._core import HTTPError, NoResource, Request, Resource, error_page, http_date
from ._front import WebService, find_web_service
from ._http import HTTPLimits, HTTPMachine
from ._pb import ADMIN_SERVICE, PUBLISH_SERVICE
from ._personal import PersonalService
from ._plugin import WebPlugin, plugin
from ._relay import Publisher, RelayedRequest, RelayResource
from ._server import HTTPServer, serve_http
from ._static import File
from ._users import Homes, UserDirectory
from ._wsgi import WSGIResource

__all__ = [
    "ADMIN_SERVICE",
    "ASGIResource",
    "File",
    "HTTPError",
    "HTTPLimits",
    "HTTPMachine",
    "HTTPServer",
    "Homes",
    "NoResource",
    "PUBLISH_SERVICE",
    "PersonalService",
    "Publisher",
    "RelayResource",
    "RelayedRequest",
    "Request",
    "Resource",
    "UserDirectory",
    "WSGIResource",
    "WebPlugin",
    "WebService",
    "error_page",
    "find_web_service",
    "http_date",
    "plugin",
    "serve_http",
]
