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
import {claimFd, setGuardLog, undecodableReason} from './dbus-guard.js'
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
  <interface name="org.freedesktop.DBus.Properties">
    <method name="Get"><arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="v" direction="out"/></method>
    <method name="GetAll"><arg type="s" direction="in"/><arg type="a{sv}" direction="out"/></method>
  </interface>
  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect"><arg type="s" direction="out"/></method>
  </interface>
</node>
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
    Flushed: new dbus.Variant('b', summary.flushed),
    DurationMs: new dbus.Variant('t', BigInt(summary.durationMs)),
  }
}

function who(c: ActiveCapture): string {
  return `${describeIdentity(c.identity)} sender=${c.owner}`
}

/** The NO_REPLY_EXPECTED header flag. */
const NO_REPLY_EXPECTED = 1

function closeQuietly(fd: number): void {
  try {
    closeSync(fd)
  } catch {
    // not open
  }
}

/** Runs until idle for idleTimeoutMs; resolves then. */
export async function runService(options: ServiceOptions): Promise<void> {
  const uid = process.getuid?.() ?? 0
  if (options.testMode && uid === 0) {
    throw new HelperError('HELPER_TEST_MODE_AS_ROOT', 'Refusing to run the monitor helper in test mode as root: test mode skips polkit.', {
      hint: 'Run test mode as an ordinary user on a private bus (e.g. setpriv --reuid=nobody).',
      exit: 1,
    })
  }
  if (!options.testMode && options.address !== undefined) {
    throw new HelperError('HELPER_ADDRESS_NEEDS_TEST_MODE', 'A bus address is only accepted in test mode.', {exit: 2})
  }
  const limits: HelperLimits = {...DEFAULT_LIMITS, ...options.limits}
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`))
  setGuardLog((line) => log(`message guard: ${line}`))
  const captureAddress = options.address ?? busAddress('system')
  const bus = options.address
    ? dbus.sessionBus({busAddress: options.address, negotiateUnixFd: true} as dbus.SessionBusOptions)
    : dbus.systemBus({negotiateUnixFd: true})

  bus.on('error', (err: Error) => {
    // Without its bus connection the service is useless: say why and stop.
    log(`fatal: bus connection failed: ${err.message}`)
    for (const entry of active.values()) entry.controller.abort('stopped')
    fatal = err
    finish()
  })
  let fatal: Error | undefined

  const active = new Map<string, ActiveCapture>()
  let reserved = 0
  const reservedByUid = new Map<number, number>()
  let nextId = 1
  let idleTimer: NodeJS.Timeout | undefined
  let finish!: () => void
  const finished = new Promise<void>((resolve) => (finish = resolve))

  const armIdle = (): void => {
    clearTimeout(idleTimer)
    if (reserved > 0) return
    idleTimer = setTimeout(() => {
      log('idle: exiting')
      bus.disconnect()
      finish()
    }, options.idleTimeoutMs)
  }

  // Answers never throw: a reply that cannot be sent is logged, and callers that asked for no reply get none.
  const send = (msg: dbus.Message, make: () => dbus.Message): void => {
    if ((msg.flags & NO_REPLY_EXPECTED) !== 0) return
    try {
      bus.send(make())
    } catch (err) {
      log(`could not answer ${msg.interface}.${msg.member} from ${msg.sender}: ${(err as Error).message}`)
    }
  }
  const reply = (msg: dbus.Message, signature?: string, body?: unknown[]): void => send(msg, () => dbus.Message.newMethodReturn(msg, signature, body))
  const fail = (msg: dbus.Message, name: string, text: string): void => send(msg, () => dbus.Message.newError(msg as unknown as string, name, text))

  // Start calls waiting for credentials or polkit (which may wait for a password): bounded per caller and in total.
  const inFlight = new Map<string, number>()
  let inFlightTotal = 0

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
        log(`capture ${id} end: ${who(entry)} reason=${summary.reason} messages=${summary.messages} bytes=${summary.bytes} dropped=${summary.dropped}`)
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
    const mine = inFlight.get(sender) ?? 0
    if (mine >= limits.inFlightPerCaller || inFlightTotal >= limits.inFlightTotal) {
      closeQuietly(fd)
      log(`refused (in-flight calls): sender=${sender} in-flight-for-sender=${mine} in-flight=${inFlightTotal}`)
      return fail(msg, HelperErrors.LimitsExceeded, `Too many Start calls waiting (${mine} from ${sender}, ${inFlightTotal} in total; limits ${limits.inFlightPerCaller} and ${limits.inFlightTotal}).`)
    }
    inFlight.set(sender, mine + 1)
    inFlightTotal++
    const done = (): void => {
      inFlightTotal--
      const left = (inFlight.get(sender) ?? 1) - 1
      if (left > 0) inFlight.set(sender, left)
      else inFlight.delete(sender)
    }
    start(msg, fd)
      .catch((err: Error) => {
        log(`Start from ${sender} failed: ${err.message}`)
        fail(msg, HelperErrors.Failed, err.message)
      })
      .finally(done)
  }

  const handle = (msg: dbus.Message): boolean => {
    const undecodable = undecodableReason()
    if (undecodable !== null) {
      // Whatever its path: nothing else may look at a message without its body.
      log(`refused an undecodable call ${msg.interface ?? ''}.${msg.member ?? ''} from ${msg.sender}: ${undecodable}`)
      fail(msg, HelperErrors.InvalidArgs, `The call could not be read: ${undecodable}.`)
      return true
    }
    if (msg.path !== HELPER_OBJECT_PATH) return false
    const call = `${msg.interface}.${msg.member}`
    switch (call) {
      case `${HELPER_INTERFACE}.Start`:
        startCall(msg)
        return true
      case `${HELPER_INTERFACE}.Stop`:
        if (msg.signature !== 'o') fail(msg, HelperErrors.InvalidArgs, 'Stop takes (o capture).')
        else stop(msg)
        return true
      case 'org.freedesktop.DBus.Properties.Get': {
        const props = properties()
        const name = String(msg.body[1])
        if (msg.signature === 'ss' && msg.body[0] === HELPER_INTERFACE && Object.hasOwn(props, name)) reply(msg, 'v', [props[name]])
        else fail(msg, HelperErrors.InvalidArgs, `No property ${msg.body[0]}.${msg.body[1]}.`)
        return true
      }
      case 'org.freedesktop.DBus.Properties.GetAll':
        if (msg.signature !== 's') fail(msg, HelperErrors.InvalidArgs, 'GetAll takes (s interface).')
        else reply(msg, 'a{sv}', [msg.body[0] === HELPER_INTERFACE ? properties() : {}])
        return true
      case 'org.freedesktop.DBus.Introspectable.Introspect':
        reply(msg, 's', [INTROSPECTION])
        return true
      default:
        return false
    }
  }

  bus.addMethodHandler((msg: dbus.Message): boolean => {
    try {
      return handle(msg)
    } catch (err) {
      log(`error handling ${msg.interface}.${msg.member} from ${msg.sender}: ${(err as Error).message}`)
      fail(msg, HelperErrors.Failed, 'The service could not handle the call.')
      return true
    }
  })

  // A caller that leaves the bus stops its captures.
  bus.on('message', (msg: dbus.Message) => {
    if (msg.type !== dbus.MessageType.SIGNAL || msg.member !== 'NameOwnerChanged' || msg.sender !== 'org.freedesktop.DBus' || msg.signature !== 'sss') return
    const [name, , newOwner] = msg.body as [string, string, string]
    if (newOwner !== '' || !name.startsWith(':')) return
    for (const entry of active.values()) if (entry.owner === name) entry.controller.abort('stopped')
  })

  try {
    await bus.call(
      new dbus.Message({
        destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'AddMatch',
        signature: 's', body: ["type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged'"],
      }),
    )
    const got = await bus.requestName(HELPER_BUS_NAME, dbus.NameFlag.DO_NOT_QUEUE)
    if (got !== dbus.RequestNameReply.PRIMARY_OWNER) throw new Error(`${HELPER_BUS_NAME} is already owned`)
  } catch (err) {
    bus.disconnect()
    throw new HelperError('HELPER_START_FAILED', `The monitor helper could not start on ${captureAddress}: ${(err as Error).message}.`, {cause: err})
  }
  log(`ready on ${options.testMode ? `${captureAddress} (test mode: polkit skipped)` : 'the system bus'} as ${HELPER_BUS_NAME}`)
  armIdle()
  await finished
  if (fatal) throw new HelperError('HELPER_BUS_LOST', `The monitor helper lost its bus connection: ${fatal.message}.`, {cause: fatal})
}
