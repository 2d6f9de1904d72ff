/**
 * The monitor helper: a bus service that, after polkit says yes, captures
 * the bus it runs on into a file descriptor the caller passed (sysprofd
 * style). In test mode it runs on a private bus as an ordinary user, skips
 * polkit, and refuses to run as root.
 */
import {closeSync} from 'node:fs'
import dbus from 'dbus-next'
import '../capture/usocket-safe.js' // dbus-next's sockets are usockets too
import {busAddress} from '../dbus/address.js'
import {type CaptureSummary, capture} from '../capture/capture.js'
import {HelperError} from '../errors.js'
import {checkAuthorization} from './authorize.js'
import {type CallerIdentity, callerIdentity, describeIdentity} from './caller-identity.js'
import {InFlight, STANDARD_INTERFACES, serve, serviceFrame} from './bus-service.js'
import {claimFd} from './dbus-guard.js'
import {HELPER_BUS_NAME, HELPER_INTERFACE, HELPER_OBJECT_PATH, HELPER_OPTIONS, HelperErrors} from './constants.js'
import {DEFAULT_LIMITS, type HelperLimits, InvalidOption, type VariantLike, parseOptions} from './options.js'

export interface ServiceOptions {
  /** A bus address (test mode); the system bus when absent. */
  address?: string
  testMode: boolean
  /** Exit after this long without captures. */
  idleTimeoutMs: number
  limits?: Partial<HelperLimits>
  log?: (line: string) => void
}

interface ActiveCapture {
  id: number
  path: string
  owner: string
  identity: CallerIdentity
  controller: AbortController
}

export const INTROSPECTION = `<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <interface name="${HELPER_INTERFACE}">
    <method name="Start">
      <arg name="output" type="h" direction="in"/>
      <arg name="options" type="a{sv}" direction="in"/>
      <arg name="capture" type="o" direction="out"/>
    </method>
    <method name="Stop">
      <arg name="capture" type="o" direction="in"/>
    </method>
    <signal name="Finished">
      <arg name="capture" type="o"/>
      <arg name="stats" type="a{sv}"/>
    </signal>
    <property name="SupportedOptions" type="as" access="read"/>
    <property name="Version" type="u" access="read"/>
  </interface>
${STANDARD_INTERFACES}</node>
`

function properties(): Record<string, dbus.Variant> {
  return {
    SupportedOptions: new dbus.Variant('as', Object.keys(HELPER_OPTIONS)),
    Version: new dbus.Variant('u', 1),
  }
}

function stats(summary: CaptureSummary): Record<string, dbus.Variant> {
  return {
    Messages: new dbus.Variant('t', BigInt(summary.messages)),
    Bytes: new dbus.Variant('t', BigInt(summary.bytes)),
    Dropped: new dbus.Variant('t', BigInt(summary.dropped)),
    DroppedBytes: new dbus.Variant('t', BigInt(summary.droppedBytes)),
    DroppedTooLarge: new dbus.Variant('t', BigInt(summary.droppedTooLarge)),
    FdsClosed: new dbus.Variant('t', BigInt(summary.fdsClosed)),
    InitialStateNames: new dbus.Variant('u', summary.initialStateNames),
    Reason: new dbus.Variant('s', summary.reason),
    BusProgram: new dbus.Variant('s', summary.busProgram),
    Flushed: new dbus.Variant('b', summary.flushed),
    DurationMs: new dbus.Variant('t', BigInt(summary.durationMs)),
  }
}

function who(c: ActiveCapture): string {
  return `${describeIdentity(c.identity)} sender=${c.owner}`
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd)
  } catch {
    // not open
  }
}

/** Runs until idle for idleTimeoutMs; resolves then. */
export async function runService(options: ServiceOptions): Promise<void> {
  const limits: HelperLimits = {...DEFAULT_LIMITS, ...options.limits}
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`))
  const captureAddress = options.address ?? busAddress('system')
  const frameOptions = {what: 'the monitor helper', code: 'HELPER', address: options.address, testMode: options.testMode, log}
  const active = new Map<string, ActiveCapture>()
  const frame = serviceFrame(frameOptions, () => {
    for (const entry of active.values()) entry.controller.abort('stopped')
  })
  const {bus, reply, fail} = frame

  let reserved = 0
  const reservedByUid = new Map<number, number>()
  let nextId = 1
  let idleTimer: NodeJS.Timeout | undefined

  const armIdle = (): void => {
    clearTimeout(idleTimer)
    if (reserved > 0) return
    idleTimer = setTimeout(() => {
      log('idle: exiting')
      bus.disconnect()
      frame.finish()
    }, options.idleTimeoutMs)
  }

  // Start calls waiting for credentials or polkit (which may wait for a password): bounded per caller and in total.
  const inFlight = new InFlight(limits.inFlightPerCaller, limits.inFlightTotal)

  const release = (id: number): void => {
    reserved--
    armIdle()
    void id
  }

  /** Start, after the handler claimed `fd`: every path either hands the fd to the capture or closes it. */
  const start = async (msg: dbus.Message, fd: number): Promise<void> => {
    const rawOptions = msg.body[1] as Record<string, VariantLike>
    const closeFd = (): void => closeQuietly(fd)
    let settings
    try {
      settings = parseOptions(rawOptions, limits)
    } catch (err) {
      closeFd()
      return fail(msg, err instanceof InvalidOption ? HelperErrors.InvalidArgs : HelperErrors.Failed, (err as Error).message)
    }
    let identity: CallerIdentity
    try {
      identity = await callerIdentity(bus, msg.sender)
    } catch (err) {
      closeFd()
      return fail(msg, HelperErrors.Failed, `Could not identify the caller: ${(err as Error).message}`)
    }
    // Reserve the slot before asking polkit, so parallel requests cannot exceed the limits.
    const byUid = reservedByUid.get(identity.uid) ?? 0
    if (byUid >= limits.perUid || reserved >= limits.total) {
      closeFd()
      log(`refused (limits): ${describeIdentity(identity)} active-for-uid=${byUid} active=${reserved}`)
      return fail(msg, HelperErrors.LimitsExceeded, `Too many captures (${byUid} for uid ${identity.uid}, ${reserved} in total; limits ${limits.perUid} and ${limits.total}).`)
    }
    reserved++
    reservedByUid.set(identity.uid, byUid + 1)
    clearTimeout(idleTimer)
    const id = nextId++
    const unreserve = (): void => {
      reservedByUid.set(identity.uid, (reservedByUid.get(identity.uid) ?? 1) - 1)
      release(id)
    }

    if (!options.testMode) {
      let verdict
      try {
        verdict = await checkAuthorization(bus, msg.sender)
      } catch (err) {
        closeFd()
        unreserve()
        return fail(msg, HelperErrors.Failed, `polkit could not be asked: ${(err as Error).message}`)
      }
      if (verdict !== 'authorized') {
        closeFd()
        unreserve()
        log(`refused (polkit ${verdict}): ${describeIdentity(identity)}`)
        return verdict === 'dismissed'
          ? fail(msg, HelperErrors.Dismissed, 'Authentication was dismissed.')
          : fail(msg, HelperErrors.AccessDenied, 'Not authorized to monitor the system bus.')
      }
    }

    const path = `${HELPER_OBJECT_PATH}/capture/${id}`
    const entry: ActiveCapture = {id, path, owner: msg.sender, identity, controller: new AbortController()}
    active.set(path, entry)
    let started = false
    let running: Promise<CaptureSummary>
    try {
      running = capture({
      address: captureAddress,
      outputFd: fd,
      matchRules: settings.matchRules,
      durationMs: settings.durationMs,
      maxBytes: settings.maxBytes,
      initialState: settings.initialState,
      bufferBytes: settings.bufferBytes,
      overflow: settings.overflow,
      signal: entry.controller.signal,
      onStarted: () => {
        started = true
        log(`capture ${id} start: ${who(entry)} rules=${JSON.stringify(settings.matchRules)} duration=${settings.durationMs / 1000}s`)
        reply(msg, 'o', [path])
      },
    })
    } catch (err) {
      // capture() owns the fd from its first line; a synchronous throw (fstat of a bad fd) is before that.
      closeFd()
      active.delete(path)
      unreserve()
      return fail(msg, HelperErrors.Failed, `The capture could not start: ${(err as Error).message}`)
    }
    running.then(
      (summary) => {
        active.delete(path)
        unreserve()
        log(`capture ${id} end: ${who(entry)} reason=${summary.reason} messages=${summary.messages} bytes=${summary.bytes} dropped=${summary.dropped} bus=${summary.busProgram}`)
        const signal = dbus.Message.newSignal(HELPER_OBJECT_PATH, HELPER_INTERFACE, 'Finished', 'oa{sv}', [path, stats(summary)])
        signal.destination = entry.owner
        bus.send(signal)
      },
      (err: unknown) => {
        active.delete(path)
        unreserve()
        log(`capture ${id} failed: ${who(entry)}: ${(err as Error).message}`)
        if (!started) {
          const denied = err instanceof HelperError && err.exit === 127
          fail(msg, denied ? HelperErrors.AccessDenied : HelperErrors.Failed, (err as Error).message)
        }
      },
    )
  }

  const stop = (msg: dbus.Message): void => {
    const entry = active.get(String(msg.body[0]))
    if (!entry) return fail(msg, 'org.freedesktop.DBus.Error.UnknownObject', `No capture ${msg.body[0]}.`)
    if (entry.owner !== msg.sender) return fail(msg, HelperErrors.AccessDenied, 'Only the caller that started a capture may stop it.')
    entry.controller.abort('stopped')
    reply(msg)
  }

  const startCall = (msg: dbus.Message): void => {
    if (msg.signature !== 'ha{sv}') return fail(msg, HelperErrors.InvalidArgs, 'Start takes (h output, a{sv} options).')
    const fd = msg.body[0]
    if (!claimFd(fd)) return fail(msg, HelperErrors.InvalidArgs, 'The output fd did not come with the message.')
    const sender = msg.sender
    const slot = inFlight.take(sender)
    if ('refused' in slot) {
      closeQuietly(fd)
      log(`refused (in-flight calls): ${slot.refused}`)
      return fail(msg, HelperErrors.LimitsExceeded, `Too many Start calls waiting (${slot.refused}).`)
    }
    start(msg, fd)
      .catch((err: Error) => {
        log(`Start from ${sender} failed: ${err.message}`)
        fail(msg, HelperErrors.Failed, err.message)
      })
      .finally(slot.release)
  }

  await serve(frame, {
    name: HELPER_BUS_NAME, path: HELPER_OBJECT_PATH, interface: HELPER_INTERFACE, introspection: INTROSPECTION, properties, errors: HelperErrors,
    call: (msg) => {
      switch (msg.member) {
        case 'Start':
          startCall(msg)
          return true
        case 'Stop':
          if (msg.signature !== 'o') fail(msg, HelperErrors.InvalidArgs, 'Stop takes (o capture).')
          else stop(msg)
          return true
        default:
          return false
      }
    },
    // A caller that leaves the bus stops its captures.
    peerLeft: (name) => {
      for (const entry of active.values()) if (entry.owner === name) entry.controller.abort('stopped')
    },
  }, frameOptions)
  armIdle()
  await frame.finished
  frame.throwIfBusLost()
}
