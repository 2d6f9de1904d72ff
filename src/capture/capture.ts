/**
 * The capture engine: a monitor connection whose messages are framed (never
 * parsed) and written as pcap to an output fd, through a bounded buffer, with
 * explicit stop conditions and a summary. Usable in-process by the CLI and by
 * the helper service.
 */
import {HelperError} from '../errors.js'
import {BusConnection, type BusImplementation, DBusCallError} from './connection.js'
import {PCAP_RECORD_HEADER_LENGTH, pcapHeader, writeRecordHeader} from './pcap.js'
import {unixFdsOf} from './wire.js'
import {OutputSink} from './sink.js'

export type StopReason =
  | 'reader-gone' // the output's reader went away
  | 'duration' // the duration limit was reached
  | 'max-bytes' // the size limit was reached
  | 'stopped' // the caller asked (AbortSignal)
  | 'signal' // SIGINT/SIGTERM (the CLI aborts with this reason)
  | 'bus-disconnected' // the bus closed the monitor connection
  | 'overflow' // the output could not keep up and the policy is 'abort'
  | 'output-error' // writing failed for another reason

export type OverflowPolicy = 'drop' | 'abort'

export interface CaptureOptions {
  /** Bus address (unix:path=... or unix:abstract=...). */
  address: string
  /** The output fd; the capture owns it and closes it at the end. */
  outputFd: number
  /** Match rules for BecomeMonitor; empty = everything. */
  matchRules?: string[]
  /** Stop after this many ms. */
  durationMs?: number
  /** Stop before the output (header included) would exceed this many bytes. */
  maxBytes?: number
  /** Seed the capture with ListNames/GetNameOwner replies (default true). */
  initialState?: boolean
  /**
   * Most bytes waiting for the output before the overflow policy applies
   * (default 16 MiB). One message larger than this is still accepted when
   * nothing is waiting, so that no message is too large to capture.
   */
  bufferBytes?: number
  /** What to do when the buffer is full: drop messages (counted) or stop (default 'drop'). */
  overflow?: OverflowPolicy
  /** Abort to stop; a StopReason as the abort reason is reported as such. */
  signal?: AbortSignal
  /** Called once the monitor is active and the header is written. */
  onStarted?: () => void
}

export interface CaptureSummary {
  /** Messages written to the output. */
  messages: number
  /** Bytes written to the output, pcap header and record headers included. */
  bytes: number
  /** Messages dropped, for either reason below. */
  dropped: number
  droppedBytes: number
  /**
   * Of those, messages larger than the whole buffer that arrived while it
   * was not empty (a message larger than the buffer is written through when
   * the buffer is empty). The rest came while the buffer was full: the
   * reader was behind.
   */
  droppedTooLarge: number
  /** Unix fds that came with captured messages (closed at once). */
  fdsClosed: number
  /** Well-known names whose owner was asked for the initial state. */
  initialStateNames: number
  reason: StopReason
  /** The program routing the bus, when this process can tell (it sets the read coalescing: see COALESCE_MS). */
  busProgram: BusImplementation
  /** Whether everything accepted reached the output before it was closed. */
  flushed: boolean
  durationMs: number
}

/**
 * The sleep after a small monitor read (BusConnection.coalesce), in ms, per
 * bus, as bench/capture.ts measured it (2 cores, 157-byte signals, bus rate
 * with our monitor over the rate with `dbus-monitor --pcap`; no effect at 4 KiB):
 * - dbus-broker queues what goes to a peer and writes it in batches; a
 *   monitor that reads in batches spares it a wake-up per batch (1.30x with
 *   a 0.25 ms sleep, 1.02x without).
 * - dbus-daemon writes every message to every recipient as it routes it, and
 *   is saturated by that alone; our sleeping monitor left the other clients
 *   a free CPU, they then drained each message as it came and the bus paid a
 *   wake-up for each (0.88x with the sleep, 1.02x without). So no sleep.
 * Unknown: as dbus-broker (the lower CPU use). SYSEXT_CAPTURE_COALESCE_MS overrides (experiments).
 */
const COALESCE_MS: Record<BusImplementation, number> = {'dbus-broker': 0.25, 'dbus-daemon': 0, unknown: 0.25}
const COALESCE_MS_OVERRIDE = process.env.SYSEXT_CAPTURE_COALESCE_MS === undefined ? undefined : Number(process.env.SYSEXT_CAPTURE_COALESCE_MS)

const DEFAULT_BUFFER = 16 * 1024 * 1024
const FLUSH_TIMEOUT_MS = 2000
const STOP_REASONS = new Set<string>(['reader-gone', 'duration', 'max-bytes', 'stopped', 'signal', 'bus-disconnected', 'overflow', 'output-error'])

/** Maps a BecomeMonitor failure to a user-facing error. */
function monitorError(err: unknown, address: string): HelperError {
  if (err instanceof DBusCallError && err.errorName === 'org.freedesktop.DBus.Error.AccessDenied') {
    return new HelperError('CAPTURE_NOT_ALLOWED', `The bus at '${address}' does not allow uid ${process.getuid?.()} to monitor it.`, {
      hint: 'Monitoring the system bus needs root; run as root, or use the helper service (sysext-helper capture --system as a normal user).',
      step: 'monitor',
      exit: 127,
      cause: err,
    })
  }
  const detail = err instanceof DBusCallError ? `${err.errorName}: ${err.message}` : (err as Error).message
  return new HelperError('CAPTURE_MONITOR_FAILED', `BecomeMonitor failed on '${address}': ${detail}.`, {step: 'monitor', cause: err})
}

/**
 * Captures until a stop condition and resolves with the summary. Rejects
 * (HelperError) only when the capture could not start; the output fd is
 * closed in every case.
 */
export async function capture(options: CaptureOptions): Promise<CaptureSummary> {
  const started = Date.now()
  const sink = OutputSink.open(options.outputFd)
  let monitor: BusConnection
  try {
    monitor = await BusConnection.open(options.address, {unixFd: 'discard'})
  } catch (err) {
    await sink.close(0)
    throw err
  }

  const busProgram = await monitor.busImplementation()
  monitor.coalesceMs = COALESCE_MS_OVERRIDE ?? COALESCE_MS[busProgram]

  const limit = options.bufferBytes ?? DEFAULT_BUFFER
  const maxBytes = options.maxBytes ?? Infinity
  const policy = options.overflow ?? 'drop'
  const summary: CaptureSummary = {
    messages: 0, bytes: 0, dropped: 0, droppedBytes: 0, droppedTooLarge: 0, fdsClosed: 0, initialStateNames: 0,
    reason: 'stopped', busProgram, flushed: true, durationMs: 0,
  }

  let stopReason: StopReason | null = null
  let wake: (() => void) | null = null
  const stop = (reason: StopReason): void => {
    if (stopReason) return
    stopReason = reason
    monitor.close() // stop reading from the bus at once
    wake?.()
  }

  // The header goes out only once the monitor is active, as dbus-monitor does:
  // at the latest when the BecomeMonitor reply is handled, and before any
  // frame that came in the same read as the reply.
  let headerWritten = false
  const writeHeader = (): void => {
    if (headerWritten) return
    headerWritten = true
    const header = pcapHeader()
    sink.write([header])
    summary.bytes += header.length
  }

  // The kernel closed the fds captured messages brought (see ConnectOptions.unixFd): count them from the headers.
  let fdsDiscarded = 0
  let heads = Buffer.allocUnsafeSlow(1024 * PCAP_RECORD_HEADER_LENGTH)
  const onFrames = (frames: Buffer[], receivedAt: number): void => {
    for (const f of frames) fdsDiscarded += unixFdsOf(f)
    if (stopReason) return
    writeHeader()
    // Each message is written from the connection's read buffer, after its record header
    // (from one reusable buffer): one writev, no copy unless the sink must keep bytes (see OutputSink.write).
    if (heads.length < frames.length * PCAP_RECORD_HEADER_LENGTH) heads = Buffer.allocUnsafeSlow(frames.length * 2 * PCAP_RECORD_HEADER_LENGTH)
    const parts: Buffer[] = []
    let at = 0
    let pending = sink.pendingBytes
    for (const f of frames) {
      const rec = PCAP_RECORD_HEADER_LENGTH + f.length
      if (summary.bytes + rec > maxBytes) {
        stop('max-bytes')
        break
      }
      // A message that does not fit is refused, unless nothing is waiting: then it is written through,
      // however large (the buffer then holds one message beyond its limit, at most).
      if (pending + rec > limit && pending > 0) {
        if (policy === 'abort') {
          stop('overflow')
          break
        }
        summary.dropped++
        summary.droppedBytes += f.length
        if (rec > limit) summary.droppedTooLarge++
        continue
      }
      writeRecordHeader(heads, at, receivedAt, f.length)
      parts.push(heads.subarray(at, at + PCAP_RECORD_HEADER_LENGTH), f)
      at += PCAP_RECORD_HEADER_LENGTH
      pending += rec
      summary.messages++
      summary.bytes += rec
    }
    if (parts.length > 0) sink.write(parts)
  }

  try {
    await monitor.becomeMonitor(options.matchRules ?? [], onFrames)
  } catch (err) {
    monitor.close()
    await sink.close(0)
    throw monitorError(err, options.address)
  }

  writeHeader()

  sink.onEnd((end) => stop(end.kind === 'reader-gone' ? 'reader-gone' : 'output-error'))
  monitor.onClose(() => stop('bus-disconnected'))
  const timer = options.durationMs !== undefined ? setTimeout(() => stop('duration'), options.durationMs) : undefined
  const onAbort = (): void => {
    const r = options.signal?.reason
    stop(typeof r === 'string' && STOP_REASONS.has(r) ? (r as StopReason) : 'stopped')
  }
  if (options.signal?.aborted) onAbort()
  else options.signal?.addEventListener('abort', onAbort, {once: true})
  options.onStarted?.()

  if (options.initialState !== false && !stopReason) {
    summary.initialStateNames = await seedInitialState(options.address).catch(() => 0)
  }

  if (!stopReason) await new Promise<void>((resolve) => (wake = resolve))
  clearTimeout(timer)
  options.signal?.removeEventListener('abort', onAbort)
  summary.reason = stopReason!
  summary.fdsClosed = monitor.fdsClosed + fdsDiscarded
  summary.flushed = await sink.close(stopReason === 'reader-gone' ? 0 : FLUSH_TIMEOUT_MS)
  summary.durationMs = Date.now() - started
  return summary
}

/**
 * Bustle's trick: from a second, ordinary connection, ask for ListNames and
 * the owner of every well-known name, so the replies are in the capture.
 * Returns how many names were asked about.
 */
async function seedInitialState(address: string): Promise<number> {
  const conn = await BusConnection.open(address, {timeoutMs: 5000})
  try {
    const list = await conn.callDriver('ListNames')
    const names = (Array.isArray(list.body[0]) ? list.body[0] : []).filter((n) => !n.startsWith(':'))
    await Promise.all(names.map((name) => conn.callDriver('GetNameOwner', 's', [name]).catch(() => undefined)))
    return names.length
  } finally {
    conn.close()
  }
}

/** An AbortController aborted with reason 'signal' on SIGINT/SIGTERM, and a function to detach it. */
export function abortOnSignals(): {signal: AbortSignal; dispose: () => void} {
  const controller = new AbortController()
  const handler = (): void => controller.abort('signal')
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
  return {
    signal: controller.signal,
    dispose: () => {
      process.off('SIGINT', handler)
      process.off('SIGTERM', handler)
    },
  }
}
