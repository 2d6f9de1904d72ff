/**
 * usocket, with one lifetime bug worked around. Its native wrap embeds the
 * uv_poll_t handle and closes it with an asynchronous uv_close(); if V8
 * collects the wrap before libuv finishes that close, libuv touches freed
 * memory (seen as "uv__finish_close: Assertion ... UV_HANDLE_CLOSING"). So
 * every wrap that is closed stays referenced for a second afterwards.
 *
 * And one misuse by dbus-next: it reads a message's fields and body with
 * read(length, null), which takes *every* fd queued on the socket, so when
 * the next message (with its fds) has already arrived, that message finds
 * "No FDs available" and the exception kills the process. read() is made to
 * hand over only the message's own UNIX_FDS count, from the 16-byte header
 * dbus-next read just before.
 *
 * Patching the shared prototypes covers dbus-next's sockets too. Nothing here
 * resolves modules at run time, so it works inside the esbuild bundles.
 */
import {Duplex} from 'node:stream'
import {USocket} from 'usocket'
import {frameLength, parseMessage} from './wire.js'

const graveyard = new Set<object>()

/** Keeps every closed wrap referenced for a second (see above). Patched once, on the first connect. */
function patchWrap(proto: {close: (this: object) => unknown; __sysextSafe?: boolean}): void {
  if (proto.__sysextSafe) return
  const close = proto.close
  proto.close = function (this: object) {
    graveyard.add(this)
    setTimeout(() => graveyard.delete(this), 1000).unref()
    return close.call(this)
  }
  proto.__sysextSafe = true
}

interface Patched {
  __dbusHeader?: Buffer | null
  _wrap: {fds: number[]} | null
}

const socketProto = USocket.prototype as unknown as {
  read: (...args: unknown[]) => unknown
  connect: (...args: unknown[]) => unknown
  __sysextSafe?: boolean
}
if (!socketProto.__sysextSafe) {
  // The native wrap class is not exported (and bundles load it without
  // `bindings`): reach its prototype through the first socket's wrap.
  const connect = socketProto.connect
  socketProto.connect = function (this: {_wrap: object | null}, ...args: unknown[]) {
    const r = connect.apply(this, args)
    if (this._wrap) patchWrap(Object.getPrototypeOf(this._wrap))
    return r
  }

  const read = socketProto.read
  socketProto.read = function (this: Patched & Duplex, ...args: unknown[]) {
    const [size, fdSize] = args as [number | null | undefined, number | null | undefined]
    if (args.length < 2) {
      const r = read.apply(this, args)
      // dbus-next reads each message's fixed header alone.
      this.__dbusHeader = size === 16 && Buffer.isBuffer(r) && frameLength(r) > 0 ? r : null
      return r
    }
    const header = this.__dbusHeader
    if (fdSize !== null || !size || !header || !this._wrap) return read.apply(this, args)
    const data = Duplex.prototype.read.call(this, size) as Buffer | null
    if (!data) return null
    this.__dbusHeader = null
    let want: number
    try {
      want = parseMessage(Buffer.concat([header, data]), true).unixFds
    } catch {
      want = 0
    }
    const fds = this._wrap.fds.splice(0, Math.min(want, this._wrap.fds.length))
    return {data, fds}
  }
  socketProto.__sysextSafe = true
}

export {USocket}
