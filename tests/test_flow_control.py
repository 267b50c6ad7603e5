"""Backpressure over a real socket: a client that stops reading is paused, then dropped; others go on."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import socket
import struct
import time

import websockets

from realtime.connection import Inbox, InflightBudget
from realtime.engine.fake_backend import FakeBackend
from realtime.engine.port import TextDelta
from tests.test_server import TIMEOUT_S, recv_until, running_server

MIB = 1024 * 1024


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def frame(payload: bytes) -> bytes:
    """A masked client text frame (the zero mask keeps the payload as it is)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    return header + b"\0\0\0\0" + payload


def open_raw_websocket(host: str) -> socket.socket:
    """A WebSocket client that never reads after the handshake."""
    address, port = host.split(":")
    sock = socket.socket()
    # Small buffers (set before connecting, so the window is small too) make the stall come sooner.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    sock.settimeout(TIMEOUT_S)
    sock.connect((address, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /v1/realtime HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(1)  # byte by byte, so nothing after the handshake is read
    assert reply.startswith(b"HTTP/1.1 101")
    sock.setblocking(False)
    return sock


def push_until_closed(sock: socket.socket, message: bytes, deadline_s: float) -> tuple[int, bool]:
    """Send `message` frames as fast as the server takes them; (bytes sent, whether the server dropped us)."""
    data, n_sent = frame(message), 0
    pending = memoryview(data)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        _, writable, _ = select.select([], [sock], [], 0.2)
        if not writable:
            continue
        try:
            n = sock.send(pending)
        except (BrokenPipeError, ConnectionResetError):
            return n_sent, True
        n_sent += n
        pending = pending[n:] if n < len(pending) else memoryview(data)
    return n_sent, False


def ask_for_a_long_answer(sock: socket.socket) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]}
    long = {"type": "response.create", "response": {"max_output_tokens": "inf"}}
    for event in ({"type": "conversation.item.create", "item": item}, long):
        sock.setblocking(True)
        sock.sendall(frame(json.dumps(event).encode()))
        sock.setblocking(False)


async def complete_one_answer(host: str) -> dict:
    async with websockets.connect(f"ws://{host}/v1/realtime") as ws:
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        return (await recv_until(ws, "response.done"))[-1]


def long_answer(request) -> str:
    # ~8 MB of deltas: more than the kernel's socket buffers hold, so the server's sends must block.
    return (
        " ".join(["w" * 400] * 20_000) if request.turns[-1].parts[0].text == "go" else " ".join(["word"] * 20)
    )


async def test_a_client_that_stops_reading_is_paused_then_dropped_and_others_go_on(caplog):
    backend = FakeBackend(reply=long_answer, seconds_per_token=0.0005)
    async with running_server(backend=backend, send_timeout_s=4, max_message_bytes=256 * 1024) as (
        host,
        server,
    ):
        sock = await asyncio.to_thread(open_raw_websocket, host)
        await asyncio.to_thread(ask_for_a_long_answer, sock)
        (connection,) = server._connections.values()
        await wait_for(lambda: connection._request.transport.get_write_buffer_size() > 64 * 1024)
        # The server's sends are blocked now. Each event below is handled cheaply and leaves no state.
        clear = json.dumps({"type": "input_audio_buffer.clear", "padding": "x" * 60_000}).encode()
        rss_before = rss_bytes()
        pushing = asyncio.create_task(asyncio.to_thread(push_until_closed, sock, clear, 20.0))
        other = await complete_one_answer(host)
        n_sent, dropped = await pushing
        rss_growth = rss_bytes() - rss_before
        sock.close()
        print(
            f"after the stall the client pushed {n_sent / MIB:.1f} MiB; "
            f"server RSS +{rss_growth / MIB:.1f} MiB"
        )
        assert other["response"]["status"] == "completed"
        assert dropped, "the server never dropped the client that does not read"
        # Reading stopped: only socket buffers' worth got through, not 4 s of pushing at loopback speed.
        assert n_sent < 12 * MIB, n_sent
        assert rss_growth < 8 * MIB, rss_growth
        await wait_for(lambda: server.health()["sessions"] == 0)
        await wait_for(lambda: backend.dropped_sessions)
        assert "the client stopped reading" in caplog.text


async def test_keepalive_times_out_even_while_a_send_is_blocked():
    backend = FakeBackend(reply=long_answer, seconds_per_token=0.0005)
    async with running_server(backend=backend, send_timeout_s=600, ping_interval_s=0.5) as (host, server):
        sock = await asyncio.to_thread(open_raw_websocket, host)
        await asyncio.to_thread(ask_for_a_long_answer, sock)
        started = time.monotonic()
        await wait_for(lambda: server.health()["sessions"] == 0)
        assert time.monotonic() - started < TIMEOUT_S
        sock.close()


async def wait_for(condition, timeout_s: float = TIMEOUT_S) -> None:
    # Polls server state that has no event to wait on; bounded by the timeout.
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.02)


async def test_server_wide_inflight_budget_refuses_with_an_attributed_error():
    async with running_server(max_message_bytes=4096, max_inflight_bytes=8192) as (host, server):
        async with websockets.connect(f"ws://{host}/v1/realtime") as ws:
            await recv_until(ws, "session.created")
            # Other sessions hold almost all of the budget.
            assert server._budget.try_take(8192 - 100)
            clear = {"type": "input_audio_buffer.clear", "event_id": "evt_7", "pad": "x" * 200}
            await ws.send(json.dumps(clear))
            (error,) = await recv_until(ws, "error")
            assert error["error"]["code"] == "server_busy" and error["error"]["event_id"] == "evt_7"
            server._budget.give_back(8192 - 100)
            await ws.send(json.dumps(clear))
            await recv_until(ws, "input_audio_buffer.cleared")
        await wait_for(lambda: server._budget.n_bytes == 0)


def test_inflight_budget_counts_bytes():
    budget = InflightBudget(max_bytes=100)
    assert budget.try_take(60) and not budget.try_take(60)
    budget.give_back(60)
    assert budget.try_take(100)


async def test_inbox_pauses_client_messages_but_never_engine_outputs():
    inbox = Inbox(max_client_bytes=10)
    await inbox.put_message("x" * 8)
    blocked = asyncio.create_task(inbox.put_message("y" * 8))
    await asyncio.sleep(0)
    assert not blocked.done()
    inbox.put_nowait(TextDelta("resp_1", "engine output is never held back"))
    assert await inbox.get() == "x" * 8
    await asyncio.wait_for(blocked, TIMEOUT_S)
    assert isinstance(await inbox.get(), TextDelta) and await inbox.get() == "y" * 8
    await inbox.put_message("z" * 100)  # one message is let in whatever its size
    assert inbox.client_bytes == 100
