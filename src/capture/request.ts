/**
 * What `sysext-helper capture` asks for, and where it runs: in this process
 * when we may monitor the bus, through the helper service otherwise.
 */
import {constants, existsSync, openSync, statSync, unlinkSync} from 'node:fs'
import {isatty} from 'node:tty'
import {HelperError, fsError, usageError} from '../errors.js'
import {type BusKind, busAddress} from '../dbus/address.js'
import {type CaptureSummary, type OverflowPolicy, abortOnSignals, capture} from './capture.js'

export interface CaptureRequest {
  bus: BusKind | {address: string}
  /** A file path, or '-' for standard output. */
  output: string
  matchRules: string[]
  durationMs?: number
  maxBytes?: number
  initialState: boolean
  bufferBytes?: number
  overflow?: OverflowPolicy
  /** Go through the monitor service even when this process could monitor the bus itself. */
  viaHelper?: boolean
}

export interface CaptureResult extends CaptureSummary {
  bus: string
  via: 'in-process' | 'helper'
  output: string
}

/** Opens the output, refusing a terminal: pcap is binary. */
export function openOutput(output: string): number {
  let fd: number
  if (output === '-') fd = 1
  else {
    try {
      fd = openSync(output, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600)
    } catch (err) {
      throw fsError('CAPTURE_OUTPUT_FAILED', 'Cannot open the capture output', output, err)
    }
  }
  if (isatty(fd)) {
    throw usageError('CAPTURE_OUTPUT_TTY', `Refusing to write pcap to a terminal (${output === '-' ? 'standard output' : output}).`,
      "Redirect it to a file, pipe it to a reader (e.g. '| wireshark -k -i -'), or pass --output FILE.")
  }
  return fd
}

/** Whether this process should monitor `bus` itself rather than ask the helper. */
export function captureInProcess(bus: CaptureRequest['bus'], uid = process.getuid?.() ?? 0): boolean {
  return bus !== 'system' || uid === 0
}

export async function captureBus(request: CaptureRequest): Promise<CaptureResult> {
  const busName = typeof request.bus === 'string' ? request.bus : request.bus.address
  // A capture that fails before writing anything leaves no empty file it created behind.
  const created = request.output !== '-' && !existsSync(request.output)
  const outputFd = openOutput(request.output)
  const signals = abortOnSignals()
  try {
    if (request.viaHelper || !captureInProcess(request.bus)) {
      const {captureViaHelper} = await import('../helper/client.js')
      const address = typeof request.bus === 'string' ? (request.bus === 'system' ? undefined : busAddress('session')) : request.bus.address
      const summary = await captureViaHelper({...request, address, outputFd, signal: signals.signal})
      return {...summary, bus: busName, via: 'helper', output: request.output}
    }
    const address = typeof request.bus === 'string' ? busAddress(request.bus) : request.bus.address
    const summary = await capture({
      address,
      outputFd,
      matchRules: request.matchRules,
      durationMs: request.durationMs,
      maxBytes: request.maxBytes,
      initialState: request.initialState,
      bufferBytes: request.bufferBytes,
      overflow: request.overflow,
      signal: signals.signal,
    })
    if (summary.reason === 'output-error') {
      throw new HelperError('CAPTURE_OUTPUT_FAILED', `Writing the capture to ${request.output === '-' ? 'standard output' : request.output} failed after ${summary.messages} messages.`, {step: 'capture'})
    }
    return {...summary, bus: busName, via: 'in-process', output: request.output}
  } catch (error) {
    if (created) removeIfEmpty(request.output)
    throw error
  } finally {
    signals.dispose()
  }
}

function removeIfEmpty(path: string): void {
  try {
    if (statSync(path).size === 0) unlinkSync(path)
  } catch {}
}

const REASONS: Record<string, string> = {
  'reader-gone': 'the reader closed the output',
  duration: 'the duration limit was reached',
  'max-bytes': 'the size limit was reached',
  stopped: 'stopped',
  signal: 'interrupted',
  'bus-disconnected': 'the bus closed the connection',
  overflow: 'the reader could not keep up (--on-overflow abort)',
  'output-error': 'writing the output failed',
}

export function renderCaptureSummary(r: CaptureResult): string {
  const behind = r.dropped - r.droppedTooLarge
  const causes = [
    behind > 0 ? `${behind} because the reader was behind (the buffer was full)` : '',
    r.droppedTooLarge > 0 ? `${r.droppedTooLarge} larger than the whole buffer, arriving while it was not empty (raise --buffer-size)` : '',
  ].filter(Boolean)
  const dropped = r.dropped > 0 ? `, dropped ${r.dropped} (${r.droppedBytes} bytes): ${causes.join('; ')}` : ''
  return `Captured ${r.messages} messages (${r.bytes} bytes) from the ${typeof r.bus === 'string' && !r.bus.includes(':') ? `${r.bus} bus` : `bus at ${r.bus}`} in ${(r.durationMs / 1000).toFixed(1)} s${dropped}; ${REASONS[r.reason] ?? r.reason}.\n`
}
