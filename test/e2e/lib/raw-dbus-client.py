#!/usr/bin/python3
"""A raw system-bus client for attacking the monitor service in e2e tests.

Sends what libdbus would refuse to build: Start whose `h` index (5) is beyond
the one fd attached, then COUNT Introspect calls carrying 16 fds each, then a
Peer.Ping. Prints one JSON object: the answer to the bad-index Start, how many
floods were sent, and the Ping's answer.
"""
import json
import os
import socket
import struct
import sys

DEST = "io.github.sysext_helper.Monitor1"
PATH = "/io/github/sysext_helper/Monitor1"
COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 300


def pad(buf, n):
    return buf + b"\0" * ((-len(buf)) % n)


def field(code, sig, value):
    out = struct.pack("<BB", code, len(sig)) + sig.encode() + b"\0"
    if sig in ("s", "o"):
        out = pad(out, 4) + struct.pack("<I", len(value)) + value.encode() + b"\0"
    elif sig == "g":
        out += struct.pack("<B", len(value)) + value.encode() + b"\0"
    elif sig == "u":
        out = pad(out, 4) + struct.pack("<I", value)
    return out


def message(serial, member, interface, signature="", body=b"", unix_fds=0, path=PATH, dest=DEST):
    fields = []
    for f in [field(1, "o", path), field(2, "s", interface), field(3, "s", member), field(6, "s", dest)]:
        fields.append(f)
    if signature:
        fields.append(field(8, "g", signature))
    if unix_fds:
        fields.append(field(9, "u", unix_fds))
    arr = b""
    for f in fields:
        arr = pad(arr, 8) + f
    head = struct.pack("<BBBBIII", ord("l"), 1, 0, 1, len(body), serial, len(arr))
    return pad(head + arr, 8) + body


class Conn:
    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect("/run/dbus/system_bus_socket")
        self.s.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
        self.line()
        self.s.sendall(b"NEGOTIATE_UNIX_FD\r\n")
        assert self.line().startswith(b"AGREE_UNIX_FD")
        self.s.sendall(b"BEGIN\r\n")
        self.buf = b""
        self.serial = 0
        self.call("Hello", "org.freedesktop.DBus", path="/org/freedesktop/DBus", dest="org.freedesktop.DBus")

    def line(self):
        out = b""
        while not out.endswith(b"\r\n"):
            out += self.s.recv(1)
        return out

    def send(self, member, interface, fds=(), **kw):
        self.serial += 1
        msg = message(self.serial, member, interface, unix_fds=kw.pop("unix_fds", len(fds)), **kw)
        if fds:
            self.s.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("%di" % len(fds), *fds))])
        else:
            self.s.sendall(msg)
        return self.serial

    def reply_to(self, serial):
        """(type, error name or None) of the reply to `serial`; fds received are closed."""
        while True:
            while len(self.buf) < 16:
                self.recv()
            body_len, fields_len = struct.unpack_from("<I", self.buf, 4)[0], struct.unpack_from("<I", self.buf, 12)[0]
            total = 16 + fields_len + ((-fields_len) % 8) + body_len
            while len(self.buf) < total:
                self.recv()
            msg, self.buf = self.buf[:total], self.buf[total:]
            mtype = msg[1]
            pos, end, reply_serial, error = 16, 16 + fields_len, None, None
            while pos < end:
                pos += (-pos) % 8
                code, slen = msg[pos], msg[pos + 1]
                sig = msg[pos + 2:pos + 2 + slen].decode()
                pos += 3 + slen
                if sig in ("s", "o"):
                    pos += (-pos) % 4
                    n = struct.unpack_from("<I", msg, pos)[0]
                    val = msg[pos + 4:pos + 4 + n].decode()
                    pos += 5 + n
                elif sig == "g":
                    n = msg[pos]
                    val = msg[pos + 1:pos + 1 + n].decode()
                    pos += 2 + n
                else:
                    pos += (-pos) % 4
                    val = struct.unpack_from("<I", msg, pos)[0]
                    pos += 4
                if code == 5:
                    reply_serial = val
                if code == 4:
                    error = val
            if mtype in (2, 3) and reply_serial == serial:
                return mtype, error

    def recv(self):
        data, anc, _, _ = self.s.recvmsg(1 << 20, socket.CMSG_SPACE(253 * 4))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                for fd in struct.unpack("%di" % (len(payload) // 4), payload[: len(payload) - len(payload) % 4]):
                    os.close(fd)
        if not data:
            raise EOFError("the bus closed the connection")
        self.buf += data

    def call(self, member, interface, **kw):
        return self.reply_to(self.send(member, interface, **kw))


c = Conn()
devnull = [os.open("/dev/null", os.O_RDONLY) for _ in range(16)]
# Start(h output, a{sv} options): h = index 5, one fd attached, empty options.
bad = c.call("Start", DEST, fds=devnull[:1], signature="ha{sv}", body=struct.pack("<II", 5, 0))
sent = 0
for i in range(COUNT):
    last = c.send("Introspect", "org.freedesktop.DBus.Introspectable", fds=devnull)
    sent += 1
    # dbus-daemon refuses calls beyond max_replies_per_connection (128) still awaiting replies: batches of 50.
    if sent % 50 == 0:
        c.reply_to(last)
ping = c.call("Ping", "org.freedesktop.DBus.Peer")
print(json.dumps({"badIndex": {"type": bad[0], "error": bad[1]}, "floodSent": sent, "ping": {"type": ping[0], "error": ping[1]}}))
