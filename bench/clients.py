"""The bench's sender and receiver as Python clients (bench/capture.ts --clients python).

Like a client library: the sender writes each message with its own send(2),
the receiver frames and reads the header of every message in Python. Raw
sockets, no D-Bus library, so that the bench runs on any host with python3.
Same protocol with the bench as the Node clients: 'ready', then one JSON line.

    python3 clients.py sender ADDRESS SIZE COUNT MARKER
    python3 clients.py receiver ADDRESS COUNT
"""
import json
import os
import select
import socket
import struct
import sys
import time


def now_ms():
    return time.time() * 1000


def cpu_seconds():
    t = os.times()
    return t.user + t.system


def pad8(n):
    return (n + 7) & ~7


def marshal(serial, msg_type, fields, signature, body):
    """A little-endian message: fields is a list of (code, type, value), values str or signature."""
    header = b""
    for code, sig, value in fields:
        header += b"\0" * (pad8(len(header)) - len(header))
        raw = value.encode()
        header += bytes([code, 1]) + sig.encode() + b"\0"
        if sig == "g":
            header += bytes([len(raw)]) + raw + b"\0"
        else:
            header += b"\0" * ((4 - (len(header) % 4)) % 4)
            header += struct.pack("<I", len(raw)) + raw + b"\0"
    if signature:
        header += b"\0" * (pad8(len(header)) - len(header))
        raw = signature.encode()
        header += bytes([8, 1]) + b"g\0" + bytes([len(raw)]) + raw + b"\0"
    fixed = struct.pack("<cBBBIII", b"l", msg_type, 0, 1, len(body), serial, len(header))
    out = fixed + header
    return out + b"\0" * (pad8(len(out)) - len(out)) + body


def string_body(text):
    raw = text.encode()
    return struct.pack("<I", len(raw)) + raw + b"\0"


DRIVER = [(1, "o", "/org/freedesktop/DBus"), (6, "s", "org.freedesktop.DBus"), (2, "s", "org.freedesktop.DBus")]


def connect(address):
    path = address.split("unix:path=", 1)[1].split(",", 1)[0]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
    reply = b""
    while b"\r\n" not in reply:
        reply += sock.recv(4096)
    if not reply.startswith(b"OK "):
        raise SystemExit("authentication refused: %r" % reply)
    sock.sendall(b"BEGIN\r\n")
    return sock


class Reader:
    """Frames messages from the socket; returns (type, serial, reply_serial-less bytes)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def frames(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data
        out = []
        buf = self.buf
        at = 0
        while len(buf) - at >= 16:
            body_len, _serial, fields_len = struct.unpack_from("<III", buf, at + 4)
            length = 16 + pad8(fields_len) + body_len
            if len(buf) - at < length:
                break
            out.append(buf[at : at + length])
            at += length
        self.buf = buf[at:]
        return out


def call_driver(sock, reader, serial, member, signature="", body=b""):
    sock.sendall(marshal(serial, 1, DRIVER + [(3, "s", member)], signature, body))
    while True:
        for frame in reader.frames():
            if frame[1] in (2, 3):  # the reply (the only call in flight)
                return frame


def sender(address, size, count, marker):
    sock = connect(address)
    reader = Reader(sock)
    call_driver(sock, reader, 1, "Hello")
    fields = [(1, "o", "/bench"), (2, "s", "org.example.Bench"), (3, "s", "Tick")]
    base = len(marshal(2, 4, fields, "s", string_body(marker + "z")))
    if size < base:
        raise SystemExit("messages cannot be smaller than %d bytes" % base)
    template = marshal(2, 4, fields, "s", string_body(marker + "z" * (1 + size - base)))
    head, tail = template[:8], template[12:]
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = now_ms()
    for serial in range(2, count + 2):
        sock.sendall(head + struct.pack("<I", serial) + tail)
    call_driver(sock, reader, count + 2, "GetId")
    print(json.dumps({"t0": t0, "t1": now_ms(), "cpu": cpu_seconds()}), flush=True)


def receiver(address, count):
    sock = connect(address)
    reader = Reader(sock)
    call_driver(sock, reader, 1, "Hello")
    rule = "type='signal',interface='org.example.Bench',member='Tick'"
    call_driver(sock, reader, 2, "AddMatch", "s", string_body(rule))
    print("ready", flush=True)
    received = 0
    first = last = 0.0
    while received < count:
        if received > 0 and not select.select([sock], [], [], 3)[0]:
            break
        for frame in reader.frames():
            # What a client library does at least: read the fixed header of each message.
            _endian, msg_type, _flags, _version, body_len, _serial = struct.unpack_from("<cBBBII", frame)
            if msg_type == 4 and len(frame) >= 100:  # ours (the driver's NameAcquired is shorter)
                last = now_ms()
                if received == 0:
                    first = last
                received += 1
    print(json.dumps({"received": received, "first": first, "last": last, "cpu": cpu_seconds()}), flush=True)


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "sender":
        sender(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        receiver(sys.argv[2], int(sys.argv[3]))
