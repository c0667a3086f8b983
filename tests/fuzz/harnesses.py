"""One harness per parser that exists today.  Each builds its parser once
(module level, outside the measured loop) and asserts its contract."""

from __future__ import annotations

import os
import tempfile

import msgpack

import broker
import cred
import jelly
import services
from broker import Limits, Root
from broker._core import Broker, _hello_frame
from broker._events import AnswerEvent, CallEvent
from broker._framing import FrameReader, FrameTooLarge
from cred import scram, store
from tests.services import fixture_plugins

from ._harness import Harness, check_limits

# --- 1. native wire: frame bytes -> sans-IO core -> messages -> unjelly -----

# Small limits, so the fuzzer reaches every edge within a few bytes.
WIRE_LIMITS = Limits(max_frame=16 * 1024, max_depth=12, max_items=64, max_outstanding_calls=4,
                     max_local_references=8, max_caches=4, handshake_bytes=1024)


class _Point(jelly.Copyable, jelly.RemoteCopy):
    copy_tag = "tests.fuzz.Point"

    def __init__(self, x=0, y=0):
        self.x, self.y = x, y


class _Note(jelly.Copyable, jelly.RemoteCopy):
    copy_tag = "tests.fuzz.Note"


REGISTRY = jelly.Registry()
REGISTRY.register(_Point)
REGISTRY.register(_Note)


class _FuzzRoot(Root):
    def remote_echo(self, value=None):
        return value


class _Owner:
    """Stands in for the asyncio adapter: the core only needs an identity."""


class _Proxy:
    def __init__(self, ref_id: int) -> None:
        self.ref_id = ref_id


_ROOT = _FuzzRoot()
_HELLO = _hello_frame(WIRE_LIMITS.max_frame, WIRE_LIMITS.max_outstanding_calls)


def _wire(data: bytes) -> None:
    core = Broker(owner=_Owner(), make_proxy=_Proxy, limits=WIRE_LIMITS, registry=REGISTRY)
    core.refs.set_root(_ROOT)
    core.start(1.0)
    reader = FrameReader(WIRE_LIMITS.max_frame)
    # An odd first byte means "the peer's HELLO first", so most inputs get
    # past the handshake; an even one fuzzes the handshake itself.
    if data[:1] and data[0] & 1:
        reader.feed(_HELLO)
    reader.feed(data[1:])
    while True:
        try:
            frame = reader.next_frame()
        except FrameTooLarge:
            return  # the adapter closes the connection: documented
        if frame is None:
            return
        event = core.receive_frame(frame)
        core.take_output()
        if isinstance(event, CallEvent):
            check_limits([event.args, event.kwargs], max_depth=WIRE_LIMITS.max_depth,
                         max_items=WIRE_LIMITS.max_items)
        elif isinstance(event, AnswerEvent):
            check_limits(event.value, max_depth=WIRE_LIMITS.max_depth,
                         max_items=WIRE_LIMITS.max_items)
        assert len(core.running) <= WIRE_LIMITS.max_outstanding_calls, "running calls past the limit"


WIRE = Harness(
    "wire", "frame bytes -> broker core (receive_frame) -> messages -> unjelly", _wire,
    allowed=(broker.ProtocolError, broker.LimitExceeded, broker.InsecureJelly),
)

# --- 2. jelly alone ---------------------------------------------------------

JELLY_LIMITS = jelly.Limits(max_size=64 * 1024, max_depth=12, max_items=64, max_objects=512)


def _jelly(data: bytes) -> None:
    value = jelly.loads(data, limits=JELLY_LIMITS, registry=REGISTRY)
    check_limits(value, max_depth=JELLY_LIMITS.max_depth, max_items=JELLY_LIMITS.max_items)
    # Whatever decodes must encode again (copies through their copy_tag).
    jelly.dumps(value)


JELLY = Harness(
    "jelly", "jelly.loads with two registered copy classes; decoded values re-encode", _jelly,
    allowed=(jelly.DecodeError, jelly.InsecureJelly, jelly.LimitExceeded),
)

# --- 3. the TOML config loader ----------------------------------------------

PLUGINS = services.PluginRegistry()
PLUGINS.register(fixture_plugins.LineEchoPlugin())
PLUGINS.register(fixture_plugins.TickerPlugin())
_CONFIG_DIR = tempfile.mkdtemp(prefix="pb-fuzz-config-")
_CONFIG_PATH = os.path.join(_CONFIG_DIR, "app.toml")


def _config(data: bytes) -> None:
    with open(_CONFIG_PATH, "wb") as file:
        file.write(data)
    services.load_config(_CONFIG_PATH, registry=PLUGINS)


CONFIG = Harness(
    "config", "services.load_config on a TOML file, fixture plug-ins registered", _config,
    # load_config documents ConfigError and PluginLoadError; an unknown
    # plug-in name is reported as UnknownPluginError (a PluginError).
    allowed=(services.ConfigError, services.PluginLoadError, services.UnknownPluginError),
)

# --- 4. the account store's row decoder -------------------------------------

_UNPACK = dict(raw=False, strict_map_key=False)


def _store_row(data: bytes) -> None:
    # An input is a msgpack array standing for one SQLite row (None, int,
    # float, text, blob: the types SQLite hands back), as a damaged or
    # hand-edited database could hold in the accounts table.
    try:
        row = msgpack.unpackb(data, **_UNPACK)
    except (ValueError, TypeError, msgpack.UnpackException):
        # Not a row (ExtraData, FormatError, StackError are ValueErrors; an
        # unhashable map key a TypeError): nothing reaches the decoder.
        return
    if not isinstance(row, list) or not all(v is None or type(v) in (int, float, str, bytes) for v in row):
        return
    verifier = store._verifier_from_row(tuple(row))
    assert isinstance(verifier, scram.ScramVerifier)


STORE_ROW = Harness(
    "store-row", "cred.store: an accounts row (salt, iterations, keys) -> ScramVerifier", _store_row,
    allowed=(cred.StoreError,),
)

# --- 5. SCRAM messages --------------------------------------------------------

_VERIFIER = scram.ScramVerifier.from_password("pencil", iterations=scram.MIN_ITERATIONS)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _scram(data: bytes) -> None:
    # First byte picks the side; the rest is two messages split at the first
    # newline (client-first / client-final, or server-first / server-final).
    mode, rest = data[:1], data[1:]
    first, _, second = rest.partition(b"\n")
    if not mode or mode[0] & 1 == 0:
        server = scram.ScramServer(_text(first))
        server.start(_VERIFIER)
        server.finish(_text(second))
    else:
        # Iterations 1..4096 so a fuzzed count costs little key derivation.
        client = scram.ScramClient("user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL",
                                   min_iterations=1, max_iterations=4096)
        client.first()
        client.final(_text(first))
        client.verify(_text(second))


SCRAM = Harness(
    "scram", "cred.ScramServer client-first/final, ScramClient server-first/final", _scram,
    allowed=(cred.ScramError,),
)
