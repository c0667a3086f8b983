"""Web benchmark: small-page requests/s with keep-alive and 50 concurrent
clients, for our HTTP server beside Twisted web and uvicorn, in one run;
and the MB/s of a 100 MiB download through our relay.

    .venv/bin/python bench/bench_web.py [--quick] [--seconds S] [--rounds N]
                                        [--only NAME,...] [--connections N]
                                        [--base DIR]

``--base DIR`` also runs our rows from another checkout (``base:`` rows),
in the same rotation as ours: an A/B comparison under the same drift.

Systems (each server is its own process; the front and the personal server
are two):

=================  ==========================================================
ours-static        services.web.File serving a 1 KiB page
ours-front         the user front relaying /bench.twistd/ over PB to a
                   personal server (File) on a UNIX socket
ours-asgi-front    the same, the personal server publishing the ASGI app
ours-asgi          the ASGI app mounted directly (no front), for reference
twisted-static     twisted.web.static.File serving the same page
twisted-distrib    twisted.web.distrib.ResourceSubscription to a
                   ResourcePublisher (static.File) over a UNIX socket
uvicorn            uvicorn serving the same ASGI app directly
=================  ==========================================================

The load generator is ``wrk`` (``-t1 -cN``, keep-alive) when installed,
else a Python client (asyncio, keep-alive, N connections) in its own
process.  Systems are measured in rotation for several rounds so all see
the same machine drift; the median of the rounds is reported, with the
ratios the issue asks for.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PAGE = (b"<!DOCTYPE html><title>bench</title>" + b"x" * 1000)[:1024]
BIG = 100 * 1024 * 1024
LOOP_ENV = "PB_BENCH_WEB_LOOP"


# -- the ASGI app every ASGI row serves ------------------------------------------------


async def asgi_app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/html"), (b"content-length", b"%d" % len(PAGE))]})
    await send({"type": "http.response.body", "body": PAGE})


# -- servers (run as: bench_web.py --serve KIND ARGS) -----------------------------------


def _announce(port: int) -> None:
    print(port, flush=True)


def _exit_with_parent() -> None:
    """A server dies when the bench does (its stdin closes), even if the
    bench was killed before it could stop its children."""
    import threading

    def watch() -> None:
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def serve(kind: str, args: list[str]) -> None:
    sys.path.insert(0, REPO)
    _exit_with_parent()
    if kind.startswith("twisted"):
        return serve_twisted(kind, args)
    if kind == "uvicorn":
        import socket

        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        _announce(sock.getsockname()[1])
        config = uvicorn.Config(asgi_app, log_level="warning", access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        return
    # Our servers run on the loop `pb run` picks: uvloop where installed
    # (--loop auto, the default), as uvicorn does; --loop asyncio for the
    # standard loop.
    if os.environ.get(LOOP_ENV, "auto") == "auto":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(serve_ours(kind, args))
            return
    asyncio.run(serve_ours(kind, args))


async def serve_ours(kind: str, args: list[str]) -> None:
    from services.web import (
        ASGIResource,
        File,
        Homes,
        HTTPServer,
        PersonalService,
        Resource,
        UserDirectory,
    )

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if kind == "personal-file" or kind == "personal-asgi":
        directory, socket_path = args
        resource: Resource
        apps: list[Resource] = []
        if kind == "personal-file":
            resource = File(directory)
        else:
            resource = ASGIResource(asgi_app)
            apps.append(resource)
        service = PersonalService(resource=resource, socket_path=socket_path, apps=apps,
                                  show_banner=False)
        await service.start()
        _announce(0)
        await stop.wait()
        await service.stop(grace=1)
        return
    if kind == "front":
        (base,) = args
        resource = UserDirectory(Homes(base))
    elif kind == "static":
        (directory,) = args
        resource = File(directory)
    elif kind == "asgi":
        resource = ASGIResource(asgi_app)
        await resource.startup()
    else:
        raise SystemExit(f"unknown server kind {kind}")
    server = HTTPServer(resource)
    host, port = await server.listen("127.0.0.1", 0, backlog=1024)
    _announce(port)
    await stop.wait()
    await server.close()


def serve_twisted(kind: str, args: list[str]) -> None:
    from twisted.internet import reactor
    from twisted.spread import pb
    from twisted.web import distrib, resource, server, static

    if kind == "twisted-static":
        (directory,) = args
        port = reactor.listenTCP(0, server.Site(static.File(directory)), interface="127.0.0.1")
        _announce(port.getHost().port)
    elif kind == "twisted-personal":
        directory, socket_path = args
        site = server.Site(static.File(directory))
        reactor.listenUNIX(socket_path, pb.PBServerFactory(distrib.ResourcePublisher(site)))
        _announce(0)
    elif kind == "twisted-front":
        (socket_path,) = args
        root = resource.Resource()
        root.putChild(b"bench.twistd", distrib.ResourceSubscription("unix", socket_path))
        port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
        _announce(port.getHost().port)
    reactor.run()


# -- driving ------------------------------------------------------------------------------


class Servers:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.last_pid = 0

    def start(self, kind: str, *args: str, repo: str = REPO) -> int:
        """Start a ``--serve kind`` server from checkout ``repo`` (its own
        bench_web.py and code); its port."""
        env = dict(os.environ)
        env.pop("PYTHONASYNCIODEBUG", None)
        env["PYTHONPATH"] = repo
        # Servers' own complaints (Twisted's unhandled Deferreds when wrk
        # hangs up, say) go to a log file, not into the tables.
        tag = "base-" if repo != REPO else ""
        log = open(os.path.join(tempfile.gettempdir(), f"bench-web-{tag}{kind}.log"), "w")
        script = os.path.join(repo, "bench", "bench_web.py")
        proc = subprocess.Popen([sys.executable, script, "--serve", kind, *args],
                                stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=log,
                                text=True, env=env)
        log.close()
        self.procs.append(proc)
        self.last_pid = proc.pid
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line.strip().isdigit():
            raise RuntimeError(f"{kind} did not start (said {line!r})")
        return int(line)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stdin):
                if stream:
                    stream.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ok(url_port: int, path: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=5)
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            conn.close()
            if response.status == 200 and body == PAGE:
                return
            error = f"status {response.status}, {len(body)} bytes"
        except OSError as exc:
            error = str(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"127.0.0.1:{url_port}{path} does not serve the page: {error}")
        time.sleep(0.1)


def run_wrk(port: int, path: str, seconds: float, connections: int) -> float:
    # wrk takes whole seconds
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                          f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"wrk said: {out}")
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"  warning: {out.strip().splitlines()[-3:]}", file=sys.stderr)
    return float(match.group(1))


async def _python_load(port: int, path: str, seconds: float, connections: int) -> float:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    done = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return done / (time.monotonic() - started)


def run_python_load(port: int, path: str, seconds: float, connections: int) -> float:
    return asyncio.run(_python_load(port, path, seconds, connections))


def download_mbps(port: int, path: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.monotonic()
    conn.request("GET", path)
    response = conn.getresponse()
    got = 0
    while chunk := response.read(1 << 20):
        got += len(chunk)
    conn.close()
    if got != BIG:
        raise RuntimeError(f"download got {got} bytes")
    return got / (time.monotonic() - started) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="short windows, 1 round")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median reported)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--only", default=None, help="comma-separated system names")
    parser.add_argument("--loop", choices=("auto", "asyncio"), default="auto",
                        help="our servers' event loop: auto (uvloop where installed, as pb run "
                             "does) or asyncio")
    parser.add_argument("--base", metavar="DIR", default=None,
                        help="also run our rows from the checkout DIR (rows named base:...), "
                             "in the same rotation, for an A/B comparison")
    parser.add_argument("--python-client", action="store_true",
                        help="use the Python load generator even if wrk is installed")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1:])
        return 0
    if args.quick:
        args.seconds, args.rounds = 2.0, 1
    os.environ[LOOP_ENV] = args.loop
    load = run_wrk if (shutil.which("wrk") and not args.python_client) else run_python_load
    print(f"load generator: {'wrk -t1' if load is run_wrk else 'python asyncio client'}, "
          f"{args.connections} keep-alive connections, {args.seconds:g} s x {args.rounds} rounds; "
          f"our loop: {args.loop}",
          file=sys.stderr)

    tmp = tempfile.mkdtemp(prefix="bench-web-")
    site = os.path.join(tmp, "site")
    os.makedirs(site)
    with open(os.path.join(site, "index.html"), "wb") as f:
        f.write(PAGE)
    with open(os.path.join(site, "big"), "wb") as f:
        f.truncate(BIG)
    homes = os.path.join(tmp, "homes")
    twisted_sock = os.path.join(tmp, "twisted.sock")

    servers = Servers()
    targets: dict[str, tuple[int, str]] = {}
    pids: dict[str, list[int]] = {}  # each system's server processes (front first)
    skipped: dict[str, str] = {}
    wanted = set(args.only.split(",")) if args.only else None

    def want(name: str) -> bool:
        return wanted is None or name in wanted

    try:
        def start_ours(prefix: str, repo: str, homes: str) -> None:
            """Our rows, served by checkout ``repo``, named ``prefix`` + row."""
            if want("ours-static"):
                targets[prefix + "ours-static"] = (servers.start("static", site, repo=repo),
                                                   "/index.html")
                pids[prefix + "ours-static"] = [servers.last_pid]
            if want("ours-front") or want("ours-asgi-front"):
                for user in ("bench", "asgi"):
                    os.makedirs(os.path.join(homes, user))
                servers.start("personal-file", site, os.path.join(homes, "bench", ".pb-web.sock"),
                              repo=repo)
                file_pid = servers.last_pid
                servers.start("personal-asgi", site, os.path.join(homes, "asgi", ".pb-web.sock"),
                              repo=repo)
                asgi_pid = servers.last_pid
                front = servers.start("front", homes, repo=repo)
                if want("ours-front"):
                    targets[prefix + "ours-front"] = (front, "/bench.twistd/index.html")
                    pids[prefix + "ours-front"] = [servers.last_pid, file_pid]
                if want("ours-asgi-front"):
                    targets[prefix + "ours-asgi-front"] = (front, "/asgi.twistd/")
                    pids[prefix + "ours-asgi-front"] = [servers.last_pid, asgi_pid]
            if want("ours-asgi"):
                targets[prefix + "ours-asgi"] = (servers.start("asgi", repo=repo), "/")
                pids[prefix + "ours-asgi"] = [servers.last_pid]

        start_ours("", REPO, homes)
        if args.base:
            # The same rows from another checkout, measured in the same
            # rotation: an A/B comparison that shares the machine's drift.
            start_ours("base:", os.path.abspath(args.base), os.path.join(tmp, "base-homes"))
        try:
            import twisted  # noqa: F401
            if want("twisted-static"):
                targets["twisted-static"] = (servers.start("twisted-static", site), "/index.html")
                pids["twisted-static"] = [servers.last_pid]
            if want("twisted-distrib"):
                servers.start("twisted-personal", site, twisted_sock)
                personal_pid = servers.last_pid
                targets["twisted-distrib"] = (servers.start("twisted-front", twisted_sock),
                                              "/bench.twistd/index.html")
                pids["twisted-distrib"] = [servers.last_pid, personal_pid]
        except ImportError:
            skipped["twisted-*"] = "twisted not installed (pip install -e '.[bench]')"
        try:
            import uvicorn  # noqa: F401
            if want("uvicorn"):
                targets["uvicorn"] = (servers.start("uvicorn"), "/")
                pids["uvicorn"] = [servers.last_pid]
        except ImportError:
            skipped["uvicorn"] = "uvicorn not installed (pip install -e '.[bench]')"
        for name, (port, path) in targets.items():
            wait_ok(port, path)
            load(port, path, 0.5, args.connections)  # warm up

        results: dict[str, list[float]] = {name: [] for name in targets}
        # CPU time (user + system) per request of each system's server
        # processes: steadier than req/s on a shared machine, where a
        # process's rate depends on how often it gets a core.
        cpu: dict[str, list[list[float]]] = {name: [] for name in targets}
        window = max(1, round(args.seconds)) if load is run_wrk else args.seconds
        # Each base row next to its own row; every other round in reverse,
        # so neither side of a pair is always measured first.
        order = sorted(targets, key=lambda n: list(targets).index(n.removeprefix("base:")))
        for round_no in range(args.rounds):
            for name in (order if round_no % 2 == 0 else order[::-1]):
                port, path = targets[name]
                before = [cpu_seconds(pid) for pid in pids[name]]
                rate = load(port, path, args.seconds, args.connections)
                after = [cpu_seconds(pid) for pid in pids[name]]
                results[name].append(rate)
                requests = max(1.0, rate * window)
                cpu[name].append([(a - b) / requests * 1e6 for a, b in zip(after, before)])
                print(f"  round {round_no + 1}: {name:21s} {rate:10.0f} req/s", file=sys.stderr)
        medians = {name: statistics.median(rates) for name, rates in results.items()}

        print(f"\nsmall page (1 KiB), keep-alive, {args.connections} connections "
              f"(median of {args.rounds} x {args.seconds:g} s); server CPU per request "
              f"(median; front + personal server where there are two)")
        for name, rate in medians.items():
            per_process = [statistics.median(column) for column in zip(*cpu[name])]
            shown = " + ".join(f"{us:.0f}" for us in per_process)
            if len(per_process) > 1:
                shown += f" = {sum(per_process):.0f}"
            print(f"  {name:21s} {rate:10.0f} req/s   {shown:>16s} us CPU/request")
        for name, reason in skipped.items():
            print(f"  {name:16s} skipped: {reason}")

        def ratio(a: str, b: str) -> str:
            if a in medians and b in medians and medians[b]:
                return f"{medians[a] / medians[b]:.2f}x"
            return "n/a"

        print("\nratios (targets from issue 14)")
        print(f"  ours-static / twisted-static        {ratio('ours-static', 'twisted-static'):>7}"
              f"   (target >= 2)")
        print(f"  ours-front / twisted-distrib        {ratio('ours-front', 'twisted-distrib'):>7}"
              f"   (target >= 3)")
        print(f"  ours-front / ours-static            {ratio('ours-front', 'ours-static'):>7}"
              f"   (target >= 0.5)")
        print(f"  ours-asgi-front / uvicorn           {ratio('ours-asgi-front', 'uvicorn'):>7}"
              f"   (target >= 0.5)")
        print(f"  ours-asgi / uvicorn                 {ratio('ours-asgi', 'uvicorn'):>7}"
              f"   (reference: no front)")
        if args.base:
            print(f"  base:ours-front / base:ours-static  "
                  f"{ratio('base:ours-front', 'base:ours-static'):>7}   (the base checkout)")
            print(f"  base:ours-asgi-front / uvicorn      "
                  f"{ratio('base:ours-asgi-front', 'uvicorn'):>7}   (the base checkout)")

        if "ours-front" in targets:
            port = targets["ours-front"][0]
            rates = [download_mbps(port, "/bench.twistd/big") for _ in range(max(1, args.rounds))]
            print(f"\n100 MiB download through the relay: {statistics.median(rates):.0f} MB/s "
                  f"(median of {len(rates)})")
        # Not measured for twisted.web.distrib: it buffers the whole response
        # in the front (several GB of RSS for 100 MiB in a trial run).
    finally:
        servers.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
