/**
 * The frame both root services (Monitor1 and Manager1) stand in, so that the
 * rules every local user relies on hold the same way for both:
 * - test mode (a private bus, polkit skipped) never runs as root, and a bus
 *   address is only taken in test mode;
 * - answers never throw, and callers that asked for no reply get none;
 * - the method handler catches its own errors and refuses undecodable calls
 *   (dbus-guard.ts) whatever their path;
 * - waiting calls are bounded per connection and in total;
 * - Properties and Introspectable answer from one table;
 * - a connection leaving the bus is reported, and the well-known name is taken
 *   only once all of this is in place.
 */
import dbus from 'dbus-next'
import {HelperError} from '../errors.js'
import {setGuardLog, undecodableReason} from './dbus-guard.js'

const NO_REPLY_EXPECTED = 0x1

/** The introspection of the standard interfaces `serve` answers, for the end of a service's <node>. */
export const STANDARD_INTERFACES = `  <interface name="org.freedesktop.DBus.Properties">
    <method name="Get"><arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="v" direction="out"/></method>
    <method name="GetAll"><arg type="s" direction="in"/><arg type="a{sv}" direction="out"/></method>
  </interface>
  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect"><arg type="s" direction="out"/></method>
  </interface>
`

export interface ServiceFrameOptions {
  /** How messages name the service, e.g. "the monitor helper". */
  what: string
  /** Prefix of its error codes, e.g. "HELPER". */
  code: string
  address?: string
  testMode: boolean
  log: (line: string) => void
}

export interface ServiceFrame {
  bus: dbus.MessageBus
  reply(msg: dbus.Message, signature?: string, body?: unknown[]): void
  fail(msg: dbus.Message, name: string, text: string): void
  /** Resolves when the service should end (idle, or the bus connection failed). */
  finished: Promise<void>
  finish(): void
  /** Throws the bus failure that ended the service, if that is what ended it. */
  throwIfBusLost(): void
}

/** Connects to the bus (the system bus, or `address` in test mode) after checking the mode. */
export function serviceFrame(options: ServiceFrameOptions, onBusLost: () => void = () => undefined): ServiceFrame {
  const uid = process.getuid?.() ?? 0
  if (options.testMode && uid === 0)
    throw new HelperError(`${options.code}_TEST_MODE_AS_ROOT`, `Refusing to run ${options.what} in test mode as root: test mode skips polkit.`, {
      hint: 'Run test mode as an ordinary user on a private bus (e.g. setpriv --reuid=nobody).',
      exit: 1,
    })
  if (!options.testMode && options.address !== undefined)
    throw new HelperError(`${options.code}_ADDRESS_NEEDS_TEST_MODE`, 'A bus address is only accepted in test mode.', {exit: 2})
  const {log} = options
  setGuardLog((line) => log(`message guard: ${line}`))
  const bus = options.address
    ? dbus.sessionBus({busAddress: options.address, negotiateUnixFd: true} as dbus.SessionBusOptions)
    : dbus.systemBus({negotiateUnixFd: true})
  let lost: Error | undefined
  let finish!: () => void
  const finished = new Promise<void>((resolve) => (finish = resolve))
  bus.on('error', (err: Error) => {
    // Without its bus connection the service is useless: say why and stop.
    log(`fatal: bus connection failed: ${err.message}`)
    lost = err
    onBusLost()
    finish()
  })
  const send = (msg: dbus.Message, make: () => dbus.Message): void => {
    if ((msg.flags & NO_REPLY_EXPECTED) !== 0) return
    try {
      bus.send(make())
    } catch (err) {
      log(`could not answer ${msg.interface}.${msg.member} from ${msg.sender}: ${(err as Error).message}`)
    }
  }
  return {
    bus,
    reply: (msg, signature, body) => send(msg, () => dbus.Message.newMethodReturn(msg, signature, body)),
    fail: (msg, name, text) => send(msg, () => dbus.Message.newError(msg as unknown as string, name, text)),
    finished,
    finish,
    throwIfBusLost: () => {
      if (lost) throw new HelperError(`${options.code}_BUS_LOST`, `${options.what[0].toUpperCase()}${options.what.slice(1)} lost its bus connection: ${lost.message}.`, {cause: lost})
    },
  }
}

/** Calls waiting (for credentials, polkit, work) per connection and in total. */
export class InFlight {
  private readonly bySender = new Map<string, number>()
  total = 0

  constructor(readonly perCaller: number, readonly limit: number) {}

  /** Takes a slot for `sender`, or says why not (for the log and the error). */
  take(sender: string): {release(): void} | {refused: string} {
    const mine = this.bySender.get(sender) ?? 0
    if (mine >= this.perCaller || this.total >= this.limit)
      return {refused: `${mine} from ${sender}, ${this.total} in total; limits ${this.perCaller} and ${this.limit}`}
    this.bySender.set(sender, mine + 1)
    this.total++
    let released = false
    return {
      release: () => {
        if (released) return
        released = true
        this.total--
        const left = (this.bySender.get(sender) ?? 1) - 1
        if (left > 0) this.bySender.set(sender, left)
        else this.bySender.delete(sender)
      },
    }
  }
}

export interface ServedObject {
  name: string
  path: string
  interface: string
  introspection: string
  properties(): Record<string, dbus.Variant>
  errors: {InvalidArgs: string; Failed: string}
  /** A call of `interface` on `path`: false when the member is not one of the service's. */
  call(msg: dbus.Message): boolean
  /** A unique name left the bus. */
  peerLeft(name: string): void
}

/** Installs the method handler and the NameOwnerChanged watch, then takes the well-known name. */
export async function serve(frame: ServiceFrame, object: ServedObject, options: ServiceFrameOptions): Promise<void> {
  const {bus, reply, fail} = frame
  const {log} = options
  const handle = (msg: dbus.Message): boolean => {
    const undecodable = undecodableReason()
    if (undecodable !== null) {
      // Whatever its path: nothing else may look at a message without its body.
      log(`refused an undecodable call ${msg.interface ?? ''}.${msg.member ?? ''} from ${msg.sender}: ${undecodable}`)
      fail(msg, object.errors.InvalidArgs, `The call could not be read: ${undecodable}.`)
      return true
    }
    if (msg.path !== object.path) return false
    if (msg.interface === object.interface) return object.call(msg)
    switch (`${msg.interface}.${msg.member}`) {
      case 'org.freedesktop.DBus.Properties.Get': {
        const props = object.properties()
        const name = String(msg.body?.[1])
        if (msg.signature === 'ss' && msg.body[0] === object.interface && Object.hasOwn(props, name)) reply(msg, 'v', [props[name]])
        else fail(msg, object.errors.InvalidArgs, `No property ${msg.body?.[0]}.${msg.body?.[1]}.`)
        return true
      }
      case 'org.freedesktop.DBus.Properties.GetAll':
        if (msg.signature !== 's') fail(msg, object.errors.InvalidArgs, 'GetAll takes (s interface).')
        else reply(msg, 'a{sv}', [msg.body[0] === object.interface ? object.properties() : {}])
        return true
      case 'org.freedesktop.DBus.Introspectable.Introspect':
        reply(msg, 's', [object.introspection])
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
      fail(msg, object.errors.Failed, 'The service could not handle the call.')
      return true
    }
  })
  bus.on('message', (msg: dbus.Message) => {
    if (msg.type !== dbus.MessageType.SIGNAL || msg.member !== 'NameOwnerChanged' || msg.sender !== 'org.freedesktop.DBus' || msg.signature !== 'sss') return
    const [name, , newOwner] = msg.body as [string, string, string]
    if (newOwner === '' && name.startsWith(':')) object.peerLeft(name)
  })
  try {
    await bus.call(
      new dbus.Message({
        destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'AddMatch',
        signature: 's', body: ["type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged'"],
      }),
    )
    const got = await bus.requestName(object.name, dbus.NameFlag.DO_NOT_QUEUE)
    if (got !== dbus.RequestNameReply.PRIMARY_OWNER) throw new Error(`${object.name} is already owned`)
  } catch (err) {
    bus.disconnect()
    throw new HelperError(`${options.code}_START_FAILED`, `${options.what[0].toUpperCase()}${options.what.slice(1)} could not start${options.address ? ` on ${options.address}` : ''}: ${(err as Error).message}.`, {cause: err})
  }
  log(`ready on ${options.testMode ? `${options.address} (test mode: polkit skipped)` : 'the system bus'} as ${object.name}`)
}

/**
 * The entry point of a service: a crash leaves a trace in the journal (the
 * unit's activation brings the service back), and an error ends it with its
 * message, hint and exit code.
 */
export async function runServiceMain(fallbackCode: string, body: () => Promise<void>): Promise<never> {
  for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
    process.on(event, (err: unknown) => {
      process.stderr.write(`fatal: ${(err as Error)?.stack ?? String(err)}\n`)
      process.exit(1)
    })
  }
  try {
    await body()
    process.exit(0)
  } catch (err) {
    const e = err instanceof HelperError ? err : new HelperError(fallbackCode, (err as Error).message)
    process.stderr.write(`Error: ${e.message}\n${e.hint ? `Hint: ${e.hint}\n` : ''}`)
    process.exit(e.exit)
  }
}
