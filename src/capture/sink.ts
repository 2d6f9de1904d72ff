/**
 * Where captured bytes go: a file descriptor (file, pipe, FIFO or socket)
 * written without ever blocking the event loop, with the number of bytes not
 * yet written exposed so the capture can bound it, and prompt notice when
 * the reader goes away (POLLERR on a pipe, EOF on a socket), not only at the
 * next write.
 */
import {closeSync, constants, fstatSync, openSync, writevSync} from 'node:fs'
import {Socket} from 'node:net'
import {USocket} from './usocket-safe.js'

/** Most buffers per writev(2) call (IOV_MAX on Linux). */
const IOV_MAX = 1024

/** Drops the first `n` bytes from the front of `queue` (in place). */
function consume(queue: Buffer[], n: number): void {
  while (n > 0 && queue.length > 0) {
    const head = queue[0]
    if (head.length <= n) {
      n -= head.length
      queue.shift()
    } else {
      queue[0] = head.subarray(n)
      n = 0
    }
  }
}

export type SinkEnd = {kind: 'reader-gone'} | {kind: 'error'; error: Error}

const GONE = new Set(['EPIPE', 'ECONNRESET', 'ENOTCONN', 'ESHUTDOWN'])

export abstract class OutputSink {
  private endListener: ((end: SinkEnd) => void) | null = null
  protected ended: SinkEnd | null = null

  /** Opens a sink on `fd`; the sink owns the fd from now on and closes it (except 0-2). */
  static open(fd: number): OutputSink {
    const st = fstatSync(fd)
    if (st.isFIFO()) return new PipeSink(fd)
    if (st.isSocket()) return new StreamSink(fd)
    return new FileSink(fd)
  }

  /**
   * Writes `parts` in order. They are valid during the call only (they may
   * lie in the capture's reusable buffers): what the sink keeps, it copies.
   */
  abstract write(parts: Buffer[]): void
  /** Bytes accepted but not yet written to the fd. */
  abstract get pendingBytes(): number
  /** Waits up to `timeoutMs` for pending bytes to be written, then closes. Returns whether all were written. */
  abstract close(timeoutMs: number): Promise<boolean>

  /** Called once, when the reader goes away or a write fails. */
  onEnd(listener: (end: SinkEnd) => void): void {
    this.endListener = listener
    if (this.ended) listener(this.ended)
  }

  protected end(end: SinkEnd): void {
    if (this.ended) return
    this.ended = end
    this.endListener?.(end)
  }

  protected fail(err: NodeJS.ErrnoException): void {
    this.end(err.code && GONE.has(err.code) ? {kind: 'reader-gone'} : {kind: 'error', error: err})
  }
}

/** A socket: non-blocking writes through libuv; EOF from the reader means it closed its end. */
class StreamSink extends OutputSink {
  private readonly socket: Socket

  constructor(fd: number) {
    super()
    this.socket = new Socket({fd, readable: true, writable: true, allowHalfOpen: true})
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.fail(err))
    this.socket.on('data', () => {})
    this.socket.on('end', () => this.end({kind: 'reader-gone'}))
  }

  write(parts: Buffer[]): void {
    if (this.ended || this.socket.destroyed) return
    // One copy: the socket keeps what it has not written yet.
    this.socket.write(Buffer.concat(parts))
  }

  get pendingBytes(): number {
    return this.socket.writableLength
  }

  async close(timeoutMs: number): Promise<boolean> {
    let flushed = this.socket.writableLength === 0
    if (!flushed && !this.ended && !this.socket.destroyed) {
      flushed = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), timeoutMs)
        this.socket.once('drain', () => {
          clearTimeout(timer)
          resolve(true)
        })
        this.socket.once('close', () => {
          clearTimeout(timer)
          resolve(this.socket.writableLength === 0)
        })
      })
    }
    this.socket.destroy()
    return flushed && !this.ended
  }
}

/**
 * Written with writev(2) from the event loop, at once: one system call per
 * batch of messages, no thread-pool round trip (which costs two thread
 * wake-ups and an eventfd write per batch, more than the write itself), as
 * Node writes process.stdout to a file, and as dbus-monitor and busctl write.
 * A full pipe or a non-blocking device (EAGAIN) is retried on a short timer,
 * the rest queued meanwhile.
 */
abstract class DirectSink extends OutputSink {
  private queue: Buffer[] = []
  private queued = 0
  private retry: NodeJS.Timeout | undefined
  protected closed = false
  protected drained: (() => void) | null = null

  protected constructor(protected readonly fd: number) {
    super()
  }

  write(parts: Buffer[]): void {
    if (this.ended || this.closed) return
    // Behind (queued bytes wait for a retry): keep the order.
    const rest = this.queue.length > 0 ? parts : this.writeOut(parts.slice())
    if (rest.length === 0) return
    const kept = Buffer.concat(rest)
    this.queue.push(kept)
    this.queued += kept.length
  }

  /** Writes `list` (consumed in place) until done, EAGAIN (a retry is scheduled) or an error; returns what is left. */
  private writeOut(list: Buffer[]): Buffer[] {
    while (list.length > 0 && !this.ended && !this.closed) {
      const batch = list.length <= IOV_MAX ? list : list.slice(0, IOV_MAX)
      let n: number
      try {
        n = writevSync(this.fd, batch)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
          this.retry ??= setTimeout(() => this.flush(), 10)
          return list
        }
        this.fail(err as NodeJS.ErrnoException)
        this.drained?.()
        return []
      }
      consume(list, n)
    }
    return this.ended || this.closed ? [] : list
  }

  private flush(): void {
    this.retry = undefined
    this.queue = this.writeOut(this.queue)
    this.queued = 0
    for (const b of this.queue) this.queued += b.length
    if (this.queue.length === 0) this.drained?.()
  }

  get pendingBytes(): number {
    return this.queued
  }

  async close(timeoutMs: number): Promise<boolean> {
    if (this.queued > 0 && !this.ended && !this.closed) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs)
        this.drained = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    clearTimeout(this.retry)
    const flushed = this.queued === 0 && !this.ended
    if (!this.closed) {
      this.closed = true
      this.release()
    }
    return flushed
  }

  /** Closes the fd (once). */
  protected abstract release(): void
}

/** fd itself, or for 0-2 a new fd on the same pipe (fd itself when that fails; ENXIO: a FIFO with no reader left). */
function reopen(fd: number): {fd: number; noReader: boolean} {
  if (fd > 2) return {fd, noReader: false}
  try {
    return {fd: openSync(`/proc/self/fd/${fd}`, constants.O_WRONLY), noReader: false}
  } catch (err) {
    return {fd, noReader: (err as NodeJS.ErrnoException).code === 'ENXIO'}
  }
}

/**
 * A pipe or FIFO. Its write end reports POLLERR once no reader is left, but
 * libuv only polls a pipe while a write is pending; so the fd is polled for
 * errors all the time (usocket's uv_poll, which also makes it non-blocking,
 * so a stalled reader never blocks a thread: see DirectSink).
 *
 * Standard output (fd 1) is reopened through /proc first, so that fd 1
 * itself stays open and blocking for whoever shares it.
 */
class PipeSink extends DirectSink {
  private readonly watcher: USocket

  constructor(fd: number) {
    const own = reopen(fd)
    super(own.fd)
    if (own.noReader) queueMicrotask(() => this.end({kind: 'reader-gone'}))
    this.watcher = new USocket({fd: this.fd})
    this.watcher.on('error', () => {
      // POLLERR on a write end: the last reader is gone. usocket has closed the fd.
      this.closed = true
      this.end({kind: 'reader-gone'})
      this.drained?.()
    })
    this.watcher.resume()
  }

  protected release(): void {
    this.watcher.destroy() // closes the fd
  }
}

/**
 * A regular file or a device. Writes to a file go to the page cache and do
 * not wait for the disk, save when the kernel throttles a writer with too
 * many dirty pages; then the capture waits as dbus-monitor would.
 */
class FileSink extends DirectSink {
  constructor(fd: number) {
    super(fd)
  }

  protected release(): void {
    // Standard output stays open (as libuv does for pipes): the CLI framework may still write to it.
    if (this.fd <= 2) return
    try {
      closeSync(this.fd)
    } catch {
      // already closed
    }
  }
}
