/**
 * A raw D-Bus client connection: SASL EXTERNAL auth (optionally negotiating
 * unix fds), Hello, a few method calls, and a switch into monitor mode after
 * which it never writes again and hands whole frames to a callback.
 */
import {closeSync, readFileSync} from 'node:fs'
import {createConnection, type Socket} from 'node:net'
import {Duplex} from 'node:stream'
import {USocket} from './usocket-safe.js'
import {HelperError} from '../errors.js'
import {socketPath} from '../dbus/address.js'
import {type BodyValue, MessageType, type ParsedMessage, frameLength, marshalCall, parseMessage} from './wire.js'

export interface ConnectOptions {
  /**
   * Negotiate unix fd passing (needed for a monitor: see REFERENCE §4).
   * `true`: a usocket, which receives the fds (and can send them).
   * `'discard'`: a plain socket read with read(2): the kernel closes every fd
   * that arrives (no control buffer to install it in), at no cost to us; the
   * fast path for a monitor, which never looks at them.
   */
  unixFd?: boolean | 'discard'
  /** Limit for connect + auth + Hello, in ms. */
  timeoutMs?: number
}

/** The programs a capture tells apart (they read differently: see capture.ts COALESCE_MS). */
export const BUS_IMPLEMENTATIONS = ['dbus-daemon', 'dbus-broker', 'unknown'] as const
export type BusImplementation = (typeof BUS_IMPLEMENTATIONS)[number]

/** An error reply to one of our calls. */
export class DBusCallError extends Error {
  constructor(readonly errorName: string, message: string) {
    super(message)
    this.name = 'DBusCallError'
  }
}

/**
 * Receives the frames of one read, with the time they were received (ms since
 * the epoch, fractional). The frames may lie in the connection's reusable
 * read buffer: they are valid during the call only (copy what you keep).
 */
export type FrameHandler = (frames: Buffer[], receivedAt: number) => void

interface PendingCall {
  resolve: (msg: ParsedMessage) => void
  reject: (err: Error) => void
  /** Switch to monitor mode when this call succeeds. */
  monitor?: FrameHandler
}

const DRIVER = {destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus'}

/** Monitor reads smaller than this, of messages smaller than SMALL_MESSAGE on average, are followed by a short sleep (see coalesce). */
const COALESCE_BELOW = 32 * 1024
const SMALL_MESSAGE = 1024
const SLEEP_CELL = new Int32Array(new SharedArrayBuffer(4))
/**
 * A plain socket reads into one reusable buffer this large (libuv's default
 * is a fresh 64 KiB per read): larger than all a bus can have queued for us
 * (the bus's socket send buffer, 208 KiB by default, bounds a unix stream
 * socket's queue; our receive buffer size plays no part), so one read takes
 * everything, with no allocation.
 */
const READ_BUFFER = 1024 * 1024

function now(): number {
  return performance.timeOrigin + performance.now()
}

export class BusConnection {
  uniqueName = ''
  /** File descriptors received (and closed at once). */
  fdsClosed = 0
  private serial = 0
  private readonly pending = new Map<number, PendingCall>()
  private monitorHandler: FrameHandler | null = null
  private closed = false
  private closeListeners: Array<(err?: Error) => void> = []
  /** Partial frame: chunks received so far and how many bytes the frame needs. */
  private partial: Buffer[] = []
  private partialLength = 0
  private need = 0
  private readPaused = false
  /** Whole messages in the last monitor read. */
  private readMessages = 0
  /** The sleep after a small monitor read, in ms (0: none); see coalesce. */
  coalesceMs = 0
  /** Where onChunk sends a read (the handshake's line reader, then onData). */
  private chunkListener: (chunk: Buffer) => void = () => {}

  private constructor(private readonly socket: Duplex, readonly address: string) {}

  /** Connects, authenticates with EXTERNAL as our uid, and says Hello. */
  static async open(address: string, options: ConnectOptions = {}): Promise<BusConnection> {
    const path = socketPath(address)
    const timeoutMs = options.timeoutMs ?? 10_000
    const socket: Duplex =
      options.unixFd === true ? new USocket()
      : createConnection({path, onread: {buffer: Buffer.allocUnsafe(READ_BUFFER), callback: (n: number, buf: Uint8Array) => conn.onChunk(buf, n)}})
    const conn = new BusConnection(socket, address)
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        conn.handshake(path, options.unixFd === true || options.unixFd === 'discard'),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
        }),
      ])
    } catch (err) {
      conn.close()
      if (err instanceof HelperError) throw err
      const errno = (err as NodeJS.ErrnoException).code
      const reason =
        errno === 'ENOENT' || errno === 'ECONNREFUSED' ? 'no bus is listening there'
        : errno === 'EACCES' ? 'permission denied'
        : errno === 'EPIPE' || errno === 'ECONNRESET' ? `the bus closed the connection (uid ${process.getuid?.()} may not be allowed to connect)`
        : (err as Error).message
      throw new HelperError('DBUS_CONNECT_FAILED', `Could not connect to the bus at '${address}': ${reason}.`, {
        hint: 'Check that the bus is running and the address is right.',
        step: 'connect',
        cause: err,
      })
    } finally {
      clearTimeout(timer)
    }
    return conn
  }

  private async handshake(path: string, unixFd: boolean): Promise<void> {
    const socket = this.socket
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      if (socket instanceof USocket) {
        socket.once('connected', () => resolve())
        socket.connect(path)
      } else {
        ;(socket as Socket).once('connect', () => resolve())
      }
    })
    // SASL: lines until BEGIN; the server sends nothing after OK/AGREE until we speak.
    let text = ''
    let waiter: (() => void) | null = null
    let failure: Error | null = null
    const onData = (chunk: Buffer): void => {
      text += chunk.toString('latin1')
      waiter?.()
    }
    const onEnd = (err?: Error): void => {
      failure = err ?? new Error('the bus closed the connection during authentication')
      waiter?.()
    }
    socket.on('data', onData)
    this.chunkListener = onData
    socket.on('error', onEnd)
    socket.on('end', onEnd)
    const readLine = async (): Promise<string> => {
      for (;;) {
        const eol = text.indexOf('\r\n')
        if (eol >= 0) {
          const line = text.slice(0, eol)
          text = text.slice(eol + 2)
          return line
        }
        if (failure) throw failure
        await new Promise<void>((resolve) => (waiter = resolve))
        waiter = null
      }
    }
    const uid = process.getuid?.() ?? 0
    socket.write(Buffer.from(`\0AUTH EXTERNAL ${Buffer.from(String(uid)).toString('hex')}\r\n`, 'latin1'))
    const ok = await readLine()
    if (!ok.startsWith('OK ')) {
      throw new HelperError('DBUS_AUTH_FAILED', `The bus refused EXTERNAL authentication as uid ${uid} ('${ok}').`, {step: 'connect'})
    }
    if (unixFd) {
      socket.write(Buffer.from('NEGOTIATE_UNIX_FD\r\n', 'latin1'))
      const agree = await readLine()
      if (agree !== 'AGREE_UNIX_FD') {
        throw new HelperError('DBUS_NO_UNIX_FD', `The bus did not agree to pass file descriptors ('${agree}').`, {step: 'connect'})
      }
    }
    socket.write(Buffer.from('BEGIN\r\n', 'latin1'))
    socket.off('data', onData)
    socket.off('error', onEnd)
    socket.off('end', onEnd)
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    this.chunkListener = (chunk) => this.onData(chunk)
    socket.on('error', (err: Error) => this.onClosed(err))
    socket.on('end', () => this.onClosed())
    socket.on('close', () => this.onClosed())
    if (socket instanceof USocket) {
      socket.on('fds', () => {
        // Close every received descriptor at once: we never look at them.
        const got = socket.read(0, null)
        for (const fd of got?.fds ?? []) {
          try {
            closeSync(fd)
          } catch {
            // already closed
          }
          this.fdsClosed++
        }
      })
    }
    if (text.length > 0) this.onData(Buffer.from(text, 'latin1'))
    const hello = await this.call({...DRIVER, member: 'Hello'})
    this.uniqueName = String(hello.body[0] ?? '')
  }

  /** Calls a method and waits for the reply; an error reply rejects with DBusCallError. */
  call(msg: {destination: string; path: string; interface: string; member: string; signature?: string; body?: BodyValue[]}, monitor?: FrameHandler): Promise<ParsedMessage> {
    if (this.closed) return Promise.reject(new Error('connection closed'))
    if (this.monitorHandler) return Promise.reject(new Error('a monitor connection must not send'))
    const serial = ++this.serial
    return new Promise<ParsedMessage>((resolve, reject) => {
      this.pending.set(serial, {resolve, reject, monitor})
      this.socket.write(marshalCall({serial, ...msg}), (err?: Error | null) => {
        // usocket reports write errors only here (its destroy() emits nothing).
        if (err) this.onClosed(err)
      })
    })
  }

  /** The next serial, for messages marshalled by the caller (see sendRaw). */
  nextSerial(): number {
    return ++this.serial
  }

  /**
   * Writes already marshalled messages (load generators, fuzzers); waits while
   * the socket is full. `fds` go with the bytes (a connection opened with unixFd).
   */
  async sendRaw(buf: Buffer, fds?: number[]): Promise<void> {
    if (this.closed) throw new Error('connection closed')
    if (this.monitorHandler) throw new Error('a monitor connection must not send')
    if (this.socket instanceof USocket) {
      // usocket's write() returns nothing (not the backpressure flag): wait for the write itself.
      const socket = this.socket
      await new Promise<void>((resolve, reject) => {
        socket.write(fds && fds.length > 0 ? {data: buf, fds} : buf, (err?: Error | null) => {
          if (!err) return resolve()
          // As in call(): usocket reports a dead peer only here, and writes nothing after it.
          this.onClosed(err)
          reject(err)
        })
        this.onClose((err) => reject(err ?? new Error('connection closed')))
      })
      return
    }
    if (!this.socket.write(buf)) {
      await new Promise<void>((resolve, reject) => {
        this.socket.once('drain', resolve)
        this.onClose((err) => reject(err ?? new Error('connection closed')))
      })
    }
  }

  /**
   * Which program routes this bus: the bus driver's process name, as far as
   * this process can see it (another pid namespace or no pid: 'unknown').
   */
  async busImplementation(): Promise<BusImplementation> {
    try {
      const pid = Number((await this.callDriver('GetConnectionUnixProcessID', 's', ['org.freedesktop.DBus'])).body[0])
      const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
      // dbus-broker's driver answers with its launcher's pid (comm 'dbus-broker-lau', cut at 15 characters).
      return comm === 'dbus-daemon' ? 'dbus-daemon' : comm.startsWith('dbus-broker') ? 'dbus-broker' : 'unknown'
    } catch {
      return 'unknown'
    }
  }

  /** Calls org.freedesktop.DBus on the bus driver. */
  callDriver(member: string, signature?: string, body?: BodyValue[]): Promise<ParsedMessage> {
    return this.call({...DRIVER, member, signature, body})
  }

  /**
   * BecomeMonitor(rules, 0). Frames received after the successful reply (in
   * the same read or later) go to `handler`; the connection never writes again.
   */
  becomeMonitor(rules: string[], handler: FrameHandler): Promise<void> {
    return this.call(
      {...DRIVER, interface: 'org.freedesktop.DBus.Monitoring', member: 'BecomeMonitor', signature: 'asu', body: [rules, 0]},
      handler,
    ).then(() => undefined)
  }

  onClose(listener: (err?: Error) => void): void {
    if (this.closed) listener()
    else this.closeListeners.push(listener)
  }

  get isClosed(): boolean {
    return this.closed
  }

  close(): void {
    if (this.closed) return
    this.socket.destroy()
    this.onClosed()
  }

  private onClosed(err?: Error): void {
    if (this.closed) return
    this.closed = true
    for (const p of this.pending.values()) p.reject(err ?? new Error('the bus closed the connection'))
    this.pending.clear()
    for (const l of this.closeListeners.splice(0)) l(err)
  }

  /** A read into the plain socket's reusable buffer (see READ_BUFFER); nothing may keep `buf` past the call. */
  private onChunk(buf: Uint8Array, n: number): boolean {
    this.chunkListener(Buffer.from(buf.buffer, buf.byteOffset, n))
    return true
  }

  private onData(chunk: Buffer): void {
    const receivedAt = now()
    if (this.monitorHandler) this.coalesce(chunk.length)
    let buf = chunk
    if (this.need > 0) {
      // A copy: the chunk may be the reusable read buffer.
      this.partial.push(Buffer.from(chunk))
      this.partialLength += chunk.length
      if (this.partialLength < this.need) return
      buf = Buffer.concat(this.partial, this.partialLength)
      this.partial = []
      this.partialLength = 0
      this.need = 0
    }
    const frames: Buffer[] = []
    let offset = 0
    while (buf.length - offset >= 16) {
      const len = frameLength(buf, offset)
      if (len < 0) {
        this.socket.destroy()
        this.onClosed(new Error('the bus sent data that is not a D-Bus message'))
        return
      }
      if (buf.length - offset < len) break
      const frame = buf.subarray(offset, offset + len)
      offset += len
      if (this.monitorHandler) frames.push(frame)
      else if (this.onIncomingFrame && frame[1] !== MessageType.MethodReturn && frame[1] !== MessageType.Error) this.onIncomingFrame(frame)
      else this.dispatch(frame)
    }
    if (offset < buf.length) {
      const rest = Buffer.from(buf.subarray(offset))
      this.partial = [rest]
      this.partialLength = rest.length
      this.need = rest.length >= 16 ? frameLength(rest, 0) : 16
      // With fewer than 16 bytes we don't know the length yet: wait for 16, then re-frame.
    }
    this.readMessages = frames.length
    if (frames.length > 0 && this.monitorHandler) this.monitorHandler(frames, receivedAt)
  }

  /**
   * Read coalescing on the monitor connection. A bus pays for every message
   * it writes to a monitor that is asleep in epoll (a wake-up, and on a VM an
   * inter-processor interrupt). So after each read the socket is taken off
   * the poll set until the next event-loop turn, and when the read was small
   * (we are ahead of the bus) the thread may first sleep `coalesceMs`, so
   * that the next read takes a batch; a large read (we are behind) never
   * waits. Whether the sleep pays depends on the bus: see capture.ts. Nor
   * does a read of large messages: what the bus writes during the sleep
   * waits in its socket send buffer (208 KiB by default), charged at about
   * 600 bytes more than each message; 4 KiB messages at 100,000/s would fill
   * half of it in 0.25 ms, and a bus finding it full must wait for room
   * (dbus-broker at 4 KiB: 0.99x dbus-monitor's rate with the sleep, 1.08x
   * without).
   */
  private coalesce(got: number): void {
    if (this.readPaused) return
    // usocket: its wrap; a net.Socket: its libuv handle.
    const usock = (this.socket as unknown as {_wrap?: {pause(): void; resume(): void} | null})._wrap
    const handle = (this.socket as unknown as {_handle?: {readStop(): number; readStart(): number; reading?: boolean} | null})._handle
    if (usock) usock.pause()
    else if (handle) {
      handle.reading = false
      handle.readStop()
    } else return
    this.readPaused = true
    setImmediate(() => {
      this.readPaused = false
      if (this.closed) return
      if (this.coalesceMs > 0 && got < COALESCE_BELOW && got < this.readMessages * SMALL_MESSAGE) Atomics.wait(SLEEP_CELL, 0, 0, this.coalesceMs)
      const u = (this.socket as unknown as {_wrap?: {resume(): void} | null})._wrap
      const h = (this.socket as unknown as {_handle?: {readStart(): number; reading?: boolean} | null})._handle
      if (u) u.resume()
      else if (h) {
        h.reading = true
        h.readStart()
      }
    })
  }

  /** Receives the signals and calls that come to an ordinary connection (benches count them). */
  onIncoming: ((msg: ParsedMessage, frame: Buffer) => void) | null = null
  /** Like onIncoming, but with the frame unparsed (replies to our calls are still handled). */
  onIncomingFrame: ((frame: Buffer) => void) | null = null

  private dispatch(frame: Buffer): void {
    const msg = parseMessage(frame)
    if (msg.type !== MessageType.MethodReturn && msg.type !== MessageType.Error) {
      this.onIncoming?.(msg, frame)
      return
    }
    const call = msg.replySerial === undefined ? undefined : this.pending.get(msg.replySerial)
    if (!call) return
    this.pending.delete(msg.replySerial!)
    if (msg.type === MessageType.Error) {
      call.reject(new DBusCallError(msg.errorName ?? 'org.freedesktop.DBus.Error.Failed', String(msg.body[0] ?? msg.errorName)))
      return
    }
    if (call.monitor) {
      // From the next frame on, everything is captured.
      this.monitorHandler = call.monitor
    }
    call.resolve(msg)
  }
}
