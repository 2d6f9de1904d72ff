/**
 * The unprivileged side: pass our output fd to the monitor helper, wait for
 * its Finished signal, and map its errors to the exit codes Bustle expects
 * from `pkexec dbus-monitor` (126 dismissed, 127 not authorized).
 */
import {closeSync} from 'node:fs'
import dbus from 'dbus-next'
import '../capture/usocket-safe.js' // dbus-next's sockets are usockets too
import type {CaptureSummary, StopReason} from '../capture/capture.js'
import {BUS_IMPLEMENTATIONS} from '../capture/connection.js'
import {HelperError} from '../errors.js'
import {HELPER_BUS_NAME, HELPER_INTERFACE, HELPER_OBJECT_PATH, HelperErrors} from './constants.js'

export interface HelperCaptureRequest {
  outputFd: number
  matchRules: string[]
  durationMs?: number
  maxBytes?: number
  initialState: boolean
  bufferBytes?: number
  overflow?: 'drop' | 'abort'
  signal?: AbortSignal
  /** The bus the helper is on; the system bus when absent (tests use a private bus). */
  address?: string
}

const ALLOW_INTERACTIVE_AUTHORIZATION = 4

function toError(err: unknown): HelperError {
  const name = (err as {type?: string}).type ?? ''
  const text = (err as {text?: string; message?: string}).text ?? (err as Error).message
  switch (name) {
    case HelperErrors.Dismissed:
      return new HelperError('CAPTURE_AUTH_DISMISSED', 'Authentication was dismissed; nothing was captured.', {exit: 126, step: 'authorize', cause: err})
    case HelperErrors.AccessDenied:
      return new HelperError('CAPTURE_NOT_AUTHORIZED', `Not authorized to capture the system bus: ${text}`, {
        hint: "An administrator can allow it with a polkit rule for the action 'io.github.sysext-helper.monitor'.",
        exit: 127,
        step: 'authorize',
        cause: err,
      })
    case 'org.freedesktop.DBus.Error.ServiceUnknown':
    case 'org.freedesktop.DBus.Error.NameHasNoOwner':
    case 'org.freedesktop.DBus.Error.Spawn.ChildExited':
    case 'org.freedesktop.DBus.Error.Spawn.ServiceNotFound':
      return new HelperError('HELPER_NOT_INSTALLED', `The sysext-helper monitor service (${HELPER_BUS_NAME}) is not available: ${text}`, {
        hint: "It ships with sysext-helper's own system extension: install that with 'sudo sysext-helper self-install' (README: Installing sysext-helper on a host), or run the capture as root.",
        step: 'connect',
        cause: err,
      })
    case HelperErrors.InvalidArgs:
      return new HelperError('CAPTURE_INVALID_OPTIONS', `The monitor service refused the options: ${text}`, {exit: 2, cause: err})
    case HelperErrors.LimitsExceeded:
      return new HelperError('CAPTURE_LIMITS', `The monitor service refused: ${text}`, {hint: 'Wait for other captures to end.', cause: err})
    default:
      return new HelperError('CAPTURE_HELPER_FAILED', `The monitor service failed: ${name ? `${name}: ` : ''}${text}`, {cause: err})
  }
}

function options(req: HelperCaptureRequest): Record<string, dbus.Variant> {
  const o: Record<string, dbus.Variant> = {
    MatchRules: new dbus.Variant('as', req.matchRules),
    InitialState: new dbus.Variant('b', req.initialState),
  }
  if (req.durationMs !== undefined) o.Duration = new dbus.Variant('u', Math.max(1, Math.ceil(req.durationMs / 1000)))
  if (req.maxBytes !== undefined) o.MaxBytes = new dbus.Variant('t', BigInt(req.maxBytes))
  if (req.bufferBytes !== undefined) o.BufferSize = new dbus.Variant('u', req.bufferBytes)
  if (req.overflow !== undefined) o.OnOverflow = new dbus.Variant('s', req.overflow)
  return o
}

/** Captures through the helper; resolves with its stats when it reports Finished. */
export async function captureViaHelper(req: HelperCaptureRequest): Promise<CaptureSummary> {
  const started = Date.now()
  const bus = req.address
    ? dbus.sessionBus({busAddress: req.address, negotiateUnixFd: true} as dbus.SessionBusOptions)
    : dbus.systemBus({negotiateUnixFd: true})
  // dbus-next reports a failed connection only as an 'error' event: race every wait against it.
  let busError!: (err: unknown) => void
  const broken = new Promise<never>((_, reject) => (busError = reject))
  broken.catch(() => {})
  bus.on('error', (err: Error) =>
    busError(new HelperError('HELPER_BUS_FAILED', `Could not talk to the bus for the monitor service: ${err.message}.`, {step: 'connect', cause: err})),
  )
  const guard = <T>(p: Promise<T>): Promise<T> => Promise.race([p, broken])
  try {
    let capturePath: string | undefined
    let early: Record<string, {value: unknown}> | undefined
    let onFinished: ((stats: Record<string, {value: unknown}>) => void) | undefined
    let onGone: ((owner: string) => void) | undefined
    bus.on('message', (msg: dbus.Message) => {
      if (msg.type === dbus.MessageType.SIGNAL && msg.interface === HELPER_INTERFACE && msg.member === 'Finished') {
        const [path, stats] = msg.body as [string, Record<string, {value: unknown}>]
        if (capturePath === undefined) early = stats // raced ahead of Start's reply
        else if (path === capturePath) onFinished?.(stats)
      }
      if (msg.type === dbus.MessageType.SIGNAL && msg.member === 'NameOwnerChanged' && msg.body[0] === HELPER_BUS_NAME && msg.body[2] === '') onGone?.(String(msg.body[1]))
    })
    const driver = (member: string, body: string[]): dbus.Message =>
      new dbus.Message({destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member, signature: 's', body})
    await guard(bus.call(driver('AddMatch', [`type='signal',interface='${HELPER_INTERFACE}',member='Finished'`])))
    await guard(bus.call(driver('AddMatch', [`type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='${HELPER_BUS_NAME}'`])))

    const finished = new Promise<Record<string, {value: unknown}>>((resolve, reject) => {
      onFinished = resolve
      onGone = (owner) => reject(new HelperError('CAPTURE_HELPER_FAILED', `The monitor service (${owner}) left the bus during the capture.`))
    })
    let reply: dbus.Message | null
    try {
      const call = new dbus.Message({
        destination: HELPER_BUS_NAME,
        path: HELPER_OBJECT_PATH,
        interface: HELPER_INTERFACE,
        member: 'Start',
        signature: 'ha{sv}',
        body: [req.outputFd, options(req)],
        flags: ALLOW_INTERACTIVE_AUTHORIZATION,
      })
      reply = await guard(bus.call(call))
    } catch (err) {
      throw err instanceof HelperError ? err : toError(err)
    } finally {
      // The helper has its own copy now (or refused it); ours is not needed.
      // Standard output stays open: the CLI framework may still write to it.
      if (req.outputFd > 2) {
        try {
          closeSync(req.outputFd)
        } catch {
          // already closed
        }
      }
    }
    capturePath = String(reply?.body[0])
    const stop = (): void => {
      bus
        .call(new dbus.Message({destination: HELPER_BUS_NAME, path: HELPER_OBJECT_PATH, interface: HELPER_INTERFACE, member: 'Stop', signature: 'o', body: [capturePath]}))
        .catch(() => {})
    }
    if (req.signal?.aborted) stop()
    else req.signal?.addEventListener('abort', stop, {once: true})
    const stats = early ?? (await guard(finished))
    req.signal?.removeEventListener('abort', stop)
    const n = (k: string): number => Number((stats[k]?.value as bigint | number | undefined) ?? 0)
    const reason = String(stats.Reason?.value ?? 'stopped') as StopReason
    return {
      messages: n('Messages'),
      bytes: n('Bytes'),
      dropped: n('Dropped'),
      droppedBytes: n('DroppedBytes'),
      droppedTooLarge: n('DroppedTooLarge'),
      fdsClosed: n('FdsClosed'),
      busProgram: BUS_IMPLEMENTATIONS.find((b) => b === stats.BusProgram?.value) ?? 'unknown',
      initialStateNames: n('InitialStateNames'),
      reason: reason === 'stopped' && req.signal?.aborted ? 'signal' : reason,
      flushed: stats.Flushed?.value === true,
      durationMs: Date.now() - started,
    }
  } finally {
    bus.disconnect()
  }
}
