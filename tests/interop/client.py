"""Interop check of a webchan echo server against Python's `websockets` client.

    target/interop-venv/bin/python tests/interop/client.py ws://127.0.0.1:9001/

scripts/interop.sh installs the pinned websockets (WEBSOCKETS_VERSION there) into
target/interop-venv and runs this against examples/autobahn.rs and examples/autobahn_compat.rs.
Every text and binary message must come back unchanged. Prints "ok NAME" or "FAIL NAME: why"
per check, then "websockets: N passed, N failed"; exits 1 if any check failed.
"""

import asyncio
import os
import sys

import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.protocol import State

STEP_S = 10  # one check's budget
WATCHDOG_S = 60  # the whole run's

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20]
# 1-, 2-, 3- and 4-byte UTF-8 characters.
CHARS = ["a", "\u00e9", "\u20ac", "\U0001f600"]

url = sys.argv[1] if len(sys.argv) > 1 else None
passed = 0
failed = 0


class Failure(Exception):
    pass


def require(cond, msg):
    if not cond:
        raise Failure(msg)


async def check(name, fn):
    global passed, failed
    try:
        await asyncio.wait_for(fn(), STEP_S)
        passed += 1
        print(f"ok {name}", flush=True)
    except asyncio.TimeoutError:
        failed += 1
        print(f"FAIL {name}: timed out after {STEP_S} s", flush=True)
    except Exception as e:  # noqa: BLE001 - every failure is reported, whatever its kind
        failed += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)


def open_conn(**kwargs):
    # max_size: the 1 MiB echoes (and the 1 MiB + UTF-8 text) exceed websockets' 1 MiB default.
    # ping_interval None: no keepalive pings of the client's own, so that only this test's pings
    # are in flight (the server's keepalive pings are answered by websockets all the same).
    kwargs.setdefault("max_size", 16 << 20)
    kwargs.setdefault("ping_interval", None)
    return connect(url, **kwargs)


def binary_of(size, seed):
    return bytes(((i * 31 + seed * 7 + (i >> 8)) & 0xFF) for i in range(size))


def ascii_of(size, seed):
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    chunk = "".join(alphabet[(i + seed) % len(alphabet)] for i in range(1024))
    return (chunk * (size // 1024 + 1))[:size]


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return -1 if len(a) == len(b) else min(len(a), len(b))


async def echo(ws, payload, label):
    await ws.send(payload)
    got = await ws.recv()
    kind = "text" if isinstance(payload, str) else "binary"
    got_kind = "text" if isinstance(got, str) else "binary"
    require(got_kind == kind, f"{label}: sent a {kind} message, got a {got_kind} one")
    if got != payload:
        raise Failure(
            f"{label}: echo differs: sent {len(payload)}, got {len(got)} "
            f"({'characters' if kind == 'text' else 'bytes'}), first difference at {first_diff(payload, got)}"
        )


def boundary_texts():
    """Texts whose multi-byte characters straddle each size boundary B: ASCII up to byte B-o,
    then a character of L bytes (o in 1..L-1), then a tail; and all four kinds mixed, 1 MiB."""
    texts = []
    for b in [125, 126, 127, 65535, 65536]:
        for ch in CHARS:
            n = len(ch.encode())
            for o in range(1, n):
                texts.append(ascii_of(b - o, b) + ch + "z")
    unit = "".join(CHARS) + "x"  # 11 bytes
    texts.append(unit * -(-(1 << 20) // len(unit.encode())))
    return texts


async def main():
    print(f"websockets {websockets.__version__} client (python {sys.version.split()[0]}) against {url}")

    # EXPECT_DEFLATE=1: the server was started with permessage-deflate on (scripts/interop.sh
    # does so for examples/autobahn.rs), so every echo of this run is compressed both ways.
    # EXPECT_DEFLATE=reset: on, and with Config::deflate_client_context(false): the 101 tells
    # websockets to reset its context for each message although it did not offer to.
    expect_reset = os.environ.get("EXPECT_DEFLATE") == "reset"
    expect_deflate = os.environ.get("EXPECT_DEFLATE") == "1" or expect_reset

    async def deflate_negotiated():
        async with open_conn() as ws:
            offered = ws.request.headers.get("Sec-WebSocket-Extensions", "")
            require("permessage-deflate" in offered, f"websockets did not offer permessage-deflate ({offered!r})")
            got = ws.response.headers.get_all("Sec-WebSocket-Extensions")
            if expect_deflate:
                want = ["permessage-deflate; server_no_context_takeover"
                        + ("; client_no_context_takeover" if expect_reset else "")]
                require(got == want, f"the 101 has Sec-WebSocket-Extensions: {got}, not {want}")
                names = [type(e).__name__ for e in ws.protocol.extensions]
                require(names == ["PerMessageDeflate"], f"websockets reports extensions {names}")
            else:
                require(not got, f"the 101 has Sec-WebSocket-Extensions: {got}")
                require(not ws.protocol.extensions, f"websockets reports extensions {ws.protocol.extensions}")
            await echo(ws, "after the negotiation " * 50, "text")
            await echo(ws, binary_of(1000, 1), "binary")
            await echo(ws, "tiny", "text")
            # One message refers back to the last one in websockets' compression context
            # (unless told to reset it: then compressed on its own again).
            await echo(ws, "after the negotiation " * 50, "text again")

    what = ("accepted, the client told to reset its context" if expect_reset
            else "accepted" if expect_deflate else "declined")
    await check(f"handshake: permessage-deflate offered by websockets, {what} by the server", deflate_negotiated)

    async def deflate_limited():
        # websockets asking for a 2^9 server window and resetting its own context: the server
        # agrees (its messages then go out plain), and every kind of message still comes back.
        factory = ClientPerMessageDeflateFactory(
            server_max_window_bits=9, client_no_context_takeover=True, client_max_window_bits=9
        )
        async with open_conn(compression=None, extensions=[factory]) as ws:
            got = ws.response.headers.get_all("Sec-WebSocket-Extensions")
            want = ["permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                    "server_max_window_bits=9"]
            require(got == want, f"the 101 has Sec-WebSocket-Extensions: {got}, not {want}")
            for size in [0, 1, 200, 1023, 1024, 70000]:
                await echo(ws, ("webchan deflate \u00e9 " * (size // 10 + 1))[:size], f"text {size}")
                await echo(ws, binary_of(size, 3), f"binary {size}")

    if expect_deflate:
        await check("permessage-deflate with a 2^9 server window and no client context", deflate_limited)

    # EXPECT_PROTOCOL: the server was started with a Config::protocols list (scripts/interop.sh
    # gives examples/autobahn.rs "superchat,chat"): the first of it the client offered is
    # picked. Without it, the 101 must name none, and RFC 6455 4.1 lets the client go on.
    expect_protocol = os.environ.get("EXPECT_PROTOCOL") or None

    async def subprotocol_picked():
        async with open_conn(subprotocols=["chat", "superchat"]) as ws:
            offered = ws.request.headers.get("Sec-WebSocket-Protocol")
            require(offered == "chat, superchat", f"offer not sent as expected: {offered!r}")
            got = ws.response.headers.get_all("Sec-WebSocket-Protocol")
            want = [expect_protocol] if expect_protocol else []
            require(got == want, f"the 101 names subprotocols {got}, not {want}")
            require(ws.subprotocol == expect_protocol, f"websockets reports subprotocol {ws.subprotocol!r}")
            await echo(ws, "with the subprotocol chosen", "text")

    what = f"picks {expect_protocol}, the first of its list offered" if expect_protocol else "picks none (none configured)"
    await check(f"subprotocols chat, superchat offered: the server {what}", subprotocol_picked)

    ws = None

    async def do_connect():
        nonlocal ws
        ws = await open_conn()

    await check("connect", do_connect)

    def on_conn(fn):
        async def run():
            require(ws is not None, "no connection")
            await fn(ws)

        return run

    for size in SIZES:
        await check(f"text echo, {size} bytes", on_conn(lambda w, s=size: echo(w, ascii_of(s, s), f"text {s}")))
        await check(f"binary echo, {size} bytes", on_conn(lambda w, s=size: echo(w, binary_of(s, s), f"binary {s}")))

    async def utf8(w):
        for i, t in enumerate(boundary_texts()):
            await echo(w, t, f"utf-8 text #{i} ({len(t.encode())} bytes)")

    await check("text echo, 1-4 byte UTF-8 characters across the size boundaries", on_conn(utf8))

    async def fragmented_text(w):
        whole = "ab\U0001f600cd\u20ac\u00e9".encode()
        # Raw UTF-8 bytes as text fragments (text=True): the emoji and the euro sign are cut.
        await w.send([whole[:4], whole[4:9], whole[9:]], text=True)
        got = await w.recv()
        require(isinstance(got, str), "came back binary")
        require(got.encode() == whole, f"got {got.encode().hex()}")

    await check("fragmented text, a 4-byte character split across fragments", on_conn(fragmented_text))

    async def in_flight(w):
        n = 100
        msgs = [
            f"message {i} " + ascii_of(i * 37, i) if i % 2 else f"m{i}:".encode() + binary_of(i * 53, i)
            for i in range(n)
        ]
        for m in msgs:  # send returns once written, long before the echo
            await w.send(m)
        for i, m in enumerate(msgs):
            got = await w.recv()
            require(got == m, f"message {i} out of order or changed: got {got[:16]!r}...")

    await check("100 messages in flight come back in order", on_conn(in_flight))

    async def ping(w):
        # websockets resolves a ping's waiter only on a pong whose payload equals the ping's
        # (pongs with another payload are ignored), so a resolved waiter is the check.
        for payload in [b"webchan interop ping", binary_of(125, 9), b"\x00\xff" * 4]:
            waiter = await w.ping(payload)
            try:
                await asyncio.wait_for(waiter, 5)
            except asyncio.TimeoutError:
                raise Failure(f"no pong with the payload of a {len(payload)}-byte ping within 5 s") from None
        await echo(w, "still open after pings", "text")

    await check("ping with a payload gets a pong with the same payload", on_conn(ping))

    async def close_4000(w):
        await w.close(4000, "interop done")
        await w.wait_closed()
        require(w.protocol.close_sent is not None and w.protocol.close_sent.code == 4000, "our close not sent")
        rcvd = w.protocol.close_rcvd
        require(rcvd is not None, "no close frame from the server")
        require(rcvd.code == 4000, f"the server's close has code {rcvd.code} (reason {rcvd.reason!r})")
        require(w.close_code == 4000, f"close_code {w.close_code}")
        # websockets calls a close clean (ConnectionClosedOK) only for codes 1000 and 1001; for
        # 4000 a clean closing handshake is: both close frames, ours first, no protocol error.
        exc = w.protocol.close_exc
        require(
            exc.rcvd is not None and exc.sent is not None and exc.rcvd_then_sent is False,
            f"closing handshake incomplete: {exc}",
        )
        require(w.protocol.parser_exc is None, f"protocol error: {w.protocol.parser_exc!r}")
        require(w.protocol.state is State.CLOSED, f"state {w.protocol.state}")
        print(f"   (server's close reason: {rcvd.reason!r})", flush=True)

    await check("close 4000 with a reason: the server echoes 4000, clean close", on_conn(close_4000))

    async def second():
        async with open_conn() as w:
            await echo(w, "second connection", "text")
            await echo(w, binary_of(65536, 2), "binary")
        require(isinstance(w.protocol.close_exc, ConnectionClosedOK), f"close: {w.protocol.close_exc!r}")

    await check("a second connection after the first closed", second)

    async def many():
        conns = await asyncio.gather(*(open_conn() for _ in range(50)))

        async def talk(k, w):
            for i in range(20):
                m = f"conn {k} message {i} " + ascii_of(k * 20 + i, k) if i % 2 else binary_of(k * 100 + i, k + i)
                await echo(w, m, f"conn {k} #{i}")

        try:
            await asyncio.gather(*(talk(k, w) for k, w in enumerate(conns)))
        finally:
            await asyncio.gather(*(w.close() for w in conns))
        bad = [w for w in conns if not isinstance(w.protocol.close_exc, ConnectionClosedOK)]
        require(not bad, f"{len(bad)} of 50 did not close cleanly: {bad[0].protocol.close_exc!r}" if bad else "")

    await check("50 concurrent connections, 20 echoes each", many)

    print(f"websockets: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


async def run():
    try:
        return await asyncio.wait_for(main(), WATCHDOG_S)
    except asyncio.TimeoutError:
        print(f"FAIL watchdog: the run took more than {WATCHDOG_S} s", flush=True)
        print(f"websockets: {passed} passed, {failed + 1} failed", flush=True)
        return 1


if __name__ == "__main__":
    if not url:
        print("usage: client.py ws://HOST:PORT/", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(run()))
