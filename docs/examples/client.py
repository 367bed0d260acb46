#!/usr/bin/env python3
"""Follow a wa-sidecar's status feed with nothing but the standard library.

    python3 client.py [--addr 127.0.0.1:7390] [--token-file PATH] [--op status]

It prints the hello's snapshot, then one line per event, and answers the
server's pings. With --op it sends that op once after the hello (restart,
stop and start need the token). A gateway would use its websocket library
(aiohttp, websockets) instead of the small frame code below; the protocol
part is the same.
"""
import argparse
import asyncio
import base64
import json
import os
import struct
import sys


async def connect(host, port, token):
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /v1/events HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode()
    if " 101 " not in status:
        raise SystemExit(f"refused: {status}")
    return reader, writer


async def read_frame(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack(">H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack(">Q", await reader.readexactly(8))
    return b0 & 0x0F, b0 & 0x80, await reader.readexactly(n)


def frame(opcode, payload):
    # Frames from a client are masked (RFC 6455, 5.3).
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def messages(reader, writer):
    """Yield each JSON message; answer pings; end at a close frame."""
    parts = []
    while True:
        opcode, fin, payload = await read_frame(reader)
        if opcode == 0x9:  # ping
            writer.write(frame(0xA, payload))
        elif opcode == 0x8:  # close: echo it, report the code
            writer.write(frame(0x8, payload[:2]))
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
            print(f"closed: {code} {payload[2:].decode(errors='replace')}")
            return
        elif opcode in (0x1, 0x0):
            parts.append(payload)
            if fin:
                yield json.loads(b"".join(parts))
                parts = []


def describe(msg):
    st = msg.get("status") or {}
    if msg["type"] == "hello":
        return f"hello seq={msg['seq']} control={msg['control']} state={st.get('state')} pid={st.get('pid')}"
    if msg["type"] == "result":
        return f"result id={msg['id']} ok={msg['ok']} {msg.get('error', '')}"
    extra = ""
    if msg["event"] == "exited":
        extra = f" returncode={msg['returncode']} class={msg['class']}"
    elif msg["event"] == "backoff":
        extra = f" delay_ms={msg['delay_ms']} attempt={msg['attempt']}"
    return f"#{msg['seq']} {msg['event']}{extra} -> {st.get('state')}"


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", default="127.0.0.1:7390")
    ap.add_argument("--token-file")
    ap.add_argument("--op", choices=["status", "ping", "restart", "stop", "start"])
    ap.add_argument("--count", type=int, default=0, help="stop after this many messages (0: follow)")
    args = ap.parse_args()
    host, port = args.addr.rsplit(":", 1)
    token = os.environ.get("WA_SIDECAR_TOKEN")
    if args.token_file:
        token = open(args.token_file).read().strip()
    try:
        reader, writer = await connect(host, int(port), token)
    except OSError as e:
        # One line, and 69 (EX_UNAVAILABLE) as the CLI exits.
        print(f"no sidecar answers at {args.addr}: {e.strerror or e}", file=sys.stderr)
        raise SystemExit(69)
    seq, seen = None, 0
    async for msg in messages(reader, writer):
        print(describe(msg), flush=True)
        if msg["type"] == "hello":
            seq = msg["seq"]
            if args.op:
                writer.write(frame(0x1, json.dumps({"op": args.op, "id": "py-1"}).encode()))
        elif msg["type"] == "event":
            if msg["seq"] != seq + 1:
                print(f"gap after seq {seq}: reconnect to resync")
                return
            seq = msg["seq"]
        seen += 1
        if args.count and seen >= args.count:
            writer.write(frame(0x8, struct.pack(">H", 1000)))
            await writer.drain()
            return


if __name__ == "__main__":
    asyncio.run(main())
