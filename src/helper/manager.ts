/**
 * The install service io.github.sysext_helper.Manager1: a sandboxed Flatpak
 * app asks for its own extension, the admin consents in a polkit dialog that
 * says what goes into /usr, and the service runs what the admin would have
 * run (`sysext-helper install APP-ID`). In test mode it runs on a private bus
 * as an ordinary user and skips polkit (it then cannot install anything: the
 * CLI it runs is not root), and refuses to run as root.
 *
 * Who the app is comes only from its pinned /.flatpak-info (caller-identity.ts);
 * a caller that is not a Flatpak app may name an AppId only under the stricter
 * install-any action, and is never treated as that app.
 */
import {watch, type FSWatcher} from 'node:fs'
import dbus from 'dbus-next'
import '../capture/usocket-safe.js' // dbus-next's sockets are usockets too
import {HelperError} from '../errors.js'
import {findApp, looksLikeAppId} from '../flatpak/installations.js'
import {checkAuthorization} from './authorize.js'
import {type CallerIdentity, callerIdentity, describeIdentity} from './caller-identity.js'
import {type CliCommand, type CliError, type CliOutcome, runCli} from './cli-run.js'
import {setGuardLog, undecodableReason} from './dbus-guard.js'
import {MANAGER_ACTION_ANY, MANAGER_ACTION_APP, MANAGER_BUS_NAME, MANAGER_INTERFACE, MANAGER_OBJECT_PATH, ManagerErrors} from './constants.js'
import {readPolicy} from './policy.js'

export interface ManagerOptions {
  address?: string
  testMode: boolean
  idleTimeoutMs: number
  cli: CliCommand
  policyPath: string
  /** Directories whose changes may change an app's status (the sysext targets and the state). */
  watchDirs: string[]
  /** Calls waiting (credentials, polkit, the CLI) per connection and in total. */
  inFlightPerCaller?: number
  inFlightTotal?: number
  log?: (line: string) => void
}

/** Options of RequestInstall / RequestRemoval, with their signature. */
const REQUEST_OPTIONS: Record<string, string> = {AppId: 's', Target: 's'}
const TARGETS = new Set(['runtime', 'local', 'persistent'])

export const MANAGER_INTROSPECTION = `<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <interface name="${MANAGER_INTERFACE}">
    <method name="GetStatus">
      <arg name="status" type="a{sv}" direction="out"/>
    </method>
    <method name="RequestInstall">
      <arg name="options" type="a{sv}" direction="in"/>
      <arg name="result" type="a{sv}" direction="out"/>
    </method>
    <method name="RequestRemoval">
      <arg name="options" type="a{sv}" direction="in"/>
      <arg name="result" type="a{sv}" direction="out"/>
    </method>
    <signal name="ExtensionChanged">
      <arg name="app_id" type="s"/>
      <arg name="status" type="a{sv}"/>
    </signal>
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

/** A refusal for the caller: D-Bus error name and text. */
class Refusal extends Error {
  constructor(readonly errorName: string, message: string) {
    super(message)
  }
}

const NO_REPLY_EXPECTED = 1
const v = (sig: string, value: unknown): dbus.Variant => new dbus.Variant(sig, value)
const strings = (x: unknown): string[] => (Array.isArray(x) ? x.map(String) : [])

/** The CLI's error as the caller sees it: validation findings become Refused, with the findings in the text. */
function refusalOf(error: CliError): Refusal {
  const findings = Array.isArray(error.data?.findings) ? (error.data.findings as Array<{rule: string; file: string; message: string}>) : []
  if (findings.length > 0)
    return new Refusal(ManagerErrors.Refused, `${error.message}\n${findings.map((f) => `${f.rule}: ${f.file}: ${f.message}`).join('\n')}`)
  if (error.code === 'APP_HAS_NO_EXTENSIONS') return new Refusal(ManagerErrors.NoExtension, error.message)
  return new Refusal(ManagerErrors.Failed, `${error.message}${error.hint ? ` (${error.hint})` : ''}`)
}

/** What the dialog shows, from the dry run's declarations. */
export function dialogDetails(app: string, dry: Record<string, unknown>, extras: string[]): Record<string, string> {
  const d = (dry.declarations ?? {}) as {busNames?: Array<{name: string}>; units?: string[]; polkitActions?: string[]}
  const list = (xs: string[] | undefined): string => (xs && xs.length > 0 ? xs.join(', ') : 'none')
  return {
    app_id: app,
    extension: String(dry.name ?? app),
    bus_names: list(d.busNames?.map((b) => b.name)),
    units: list(d.units),
    polkit_actions: list(d.polkitActions),
    extras: list(extras),
    target: String(dry.target ?? 'local'),
  }
}

export async function runManager(options: ManagerOptions): Promise<void> {
  const uid = process.getuid?.() ?? 0
  if (options.testMode && uid === 0)
    throw new HelperError('MANAGER_TEST_MODE_AS_ROOT', 'Refusing to run the install service in test mode as root: test mode skips polkit.', {hint: 'Run test mode as an ordinary user on a private bus (e.g. setpriv --reuid=nobody).', exit: 1})
  if (!options.testMode && options.address !== undefined) throw new HelperError('MANAGER_ADDRESS_NEEDS_TEST_MODE', 'A bus address is only accepted in test mode.', {exit: 2})
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`))
  setGuardLog((line) => log(`message guard: ${line}`))
  const bus = options.address ? dbus.sessionBus({busAddress: options.address, negotiateUnixFd: true} as dbus.SessionBusOptions) : dbus.systemBus({negotiateUnixFd: true})
  let fatal: Error | undefined
  let finish!: () => void
  const finished = new Promise<void>((resolve) => (finish = resolve))
  bus.on('error', (err: Error) => {
    log(`fatal: bus connection failed: ${err.message}`)
    fatal = err
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
  const reply = (msg: dbus.Message, signature?: string, body?: unknown[]): void => send(msg, () => dbus.Message.newMethodReturn(msg, signature, body))
  const fail = (msg: dbus.Message, name: string, text: string): void => send(msg, () => dbus.Message.newError(msg as unknown as string, name, text))

  // Apps that asked, by connection: told when their extension's status changes.
  const watchers = new Map<string, {app: string; last: string}>()
  const inFlight = new Map<string, number>()
  let inFlightTotal = 0
  const perCaller = options.inFlightPerCaller ?? 2
  const total = options.inFlightTotal ?? 16
  let idleTimer: NodeJS.Timeout | undefined
  const armIdle = (): void => {
    clearTimeout(idleTimer)
    if (inFlightTotal > 0 || watchers.size > 0) return
    idleTimer = setTimeout(() => {
      log('idle: exiting')
      bus.disconnect()
      finish()
    }, options.idleTimeoutMs)
  }

  /** The app the caller is, or (non-Flatpak callers only) the AppId it names under the stricter action. */
  const subject = (identity: CallerIdentity, named: string | undefined): {app: string; action: string; own: boolean} => {
    if (identity.flatpakApp && (identity.pinned === 'pidfd' || identity.pinned === 'procfd')) {
      if (named !== undefined && named !== identity.flatpakApp)
        throw new Refusal(ManagerErrors.AccessDenied, `${identity.flatpakApp} may only request its own extension, not ${named}'s.`)
      return {app: identity.flatpakApp, action: MANAGER_ACTION_APP, own: true}
    }
    if (named === undefined)
      throw new Refusal(ManagerErrors.NotAnApp, `The caller is not a Flatpak app (identity: ${identity.pinned}${identity.scopeApp ? `; a cgroup scope named ${identity.scopeApp} is not proof` : ''}); only a Flatpak app's own request needs no AppId. A process outside a sandbox must name AppId, under ${MANAGER_ACTION_ANY}.`)
    return {app: named, action: MANAGER_ACTION_ANY, own: false}
  }

  const requestOptions = (raw: unknown): {appId?: string; target: string} => {
    const out: {appId?: string; target: string} = {target: 'local'}
    for (const [key, variant] of Object.entries((raw ?? {}) as Record<string, {signature: string; value: unknown}>)) {
      if (!(key in REQUEST_OPTIONS)) throw new Refusal(ManagerErrors.InvalidArgs, `Unknown option '${key}'; supported: ${Object.keys(REQUEST_OPTIONS).join(', ')}.`)
      if (variant?.signature !== REQUEST_OPTIONS[key]) throw new Refusal(ManagerErrors.InvalidArgs, `Option '${key}' must have type '${REQUEST_OPTIONS[key]}'.`)
      const value = String(variant.value)
      if (key === 'AppId') {
        if (!looksLikeAppId(value) || value.length > 255) throw new Refusal(ManagerErrors.InvalidArgs, `AppId '${value.slice(0, 80)}' is not a Flatpak app id.`)
        out.appId = value
      } else {
        if (!TARGETS.has(value)) throw new Refusal(ManagerErrors.InvalidArgs, "Target must be 'runtime', 'local' or 'persistent'.")
        out.target = value
      }
    }
    return out
  }

  const cli = (args: string[]): Promise<CliOutcome> => runCli(options.cli, args)

  /** GetStatus's answer, in the words `status` uses. */
  const statusOf = async (app: string): Promise<Record<string, dbus.Variant>> => {
    const status = await cli(['status', app])
    if (status.ok) {
      const r = status.result
      const verification = (r.verification ?? {}) as {merged?: boolean}
      return {
        AppId: v('s', app), ShipsExtension: v('b', true), Approved: v('b', true), Managed: v('b', true), Merged: v('b', verification.merged === true),
        Healthy: v('b', r.healthy === true), State: v('s', r.healthy === true ? 'healthy' : 'unhealthy'), Problems: v('as', strings(r.problems)), Fix: v('s', String(r.fix ?? '')),
      }
    }
    if (status.error.code !== 'STATUS_NOT_MANAGED' && status.error.code !== 'STATUS_GONE_AFTER_REBOOT') throw refusalOf(status.error)
    const dry = await cli(['install', app, '--dry-run'])
    const ships = dry.ok || dry.error.code !== 'APP_HAS_NO_EXTENSIONS' && dry.error.code !== 'APP_NOT_FOUND'
    const problems = dry.ok ? [status.error.message] : [status.error.message, dry.error.message]
    return {
      AppId: v('s', app), ShipsExtension: v('b', ships), Approved: v('b', false), Managed: v('b', false), Merged: v('b', false), Healthy: v('b', false),
      State: v('s', !ships ? 'no-extension' : dry.ok ? 'not-installed' : 'refused'), Problems: v('as', problems), Fix: v('s', ships && dry.ok ? 'RequestInstall()' : ''),
    }
  }

  const authorize = async (msg: dbus.Message, who: {app: string; action: string; own: boolean}, details: Record<string, string>, identity: CallerIdentity, what: string): Promise<void> => {
    if (options.testMode) return
    if (who.own) {
      const policy = readPolicy(options.policyPath, log)
      const origin = (() => {
        try {
          return findApp(who.app).origin
        } catch {
          return undefined
        }
      })()
      if (policy.noPasswordApps.includes(who.app) || (origin !== undefined && policy.noPasswordRemotes.includes(origin))) {
        log(`${what}: no password by policy (${options.policyPath}): ${describeIdentity(identity)} origin=${origin ?? '?'}`)
        return
      }
    }
    const verdict = await checkAuthorization(bus, msg.sender, who.action, details)
    if (verdict === 'authorized') return
    log(`${what} refused (polkit ${verdict}): ${describeIdentity(identity)} action=${who.action}`)
    throw verdict === 'dismissed'
      ? new Refusal(ManagerErrors.Dismissed, 'The administrator dismissed the authentication dialog.')
      : new Refusal(ManagerErrors.AccessDenied, `Not authorized (${who.action}) to change the host's /usr for ${who.app}.`)
  }

  const methods: Record<string, {signature: string; usage: string; run: (msg: dbus.Message, identity: CallerIdentity) => Promise<[string, unknown[]]>}> = {
    GetStatus: {
      signature: '',
      usage: 'GetStatus takes no arguments.',
      run: async (msg, identity) => {
        const {app} = subject(identity, undefined)
        const status = await statusOf(app)
        watchers.set(msg.sender, {app, last: String(status.State.value)})
        return ['a{sv}', [status]]
      },
    },
    RequestInstall: {
      signature: 'a{sv}',
      usage: 'RequestInstall takes (a{sv} options): AppId (non-Flatpak callers only), Target.',
      run: async (msg, identity) => {
        const opts = requestOptions(msg.body[0])
        const who = subject(identity, opts.appId)
        if (who.own && readPolicy(options.policyPath, log).mode === 'disabled')
          throw new Refusal(ManagerErrors.Disabled, `App requests are disabled by the administrator (${options.policyPath}: Mode=disabled); ask them to run 'sysext-helper install ${who.app}'.`)
        // Validation and confinement first: a refused tree is refused before anybody is asked.
        const dry = await cli(['install', who.app, '--target', opts.target, '--dry-run'])
        if (!dry.ok) throw refusalOf(dry.error)
        // Extras are the admin's alone (install/approve --allow): the app cannot ask for one; those already granted are shown.
        const listing = await cli(['list'])
        const listed = listing.ok ? ((listing.result.extensions ?? []) as Array<{appId: string | null; allow: string[]}>).find((e) => e.appId === who.app) : undefined
        const extras = strings(listed?.allow)
        const details = dialogDetails(who.app, dry.result, extras)
        await authorize(msg, who, details, identity, 'RequestInstall')
        log(`RequestInstall: installing ${who.app} for ${describeIdentity(identity)} action=${who.action} ${JSON.stringify(details)}`)
        const done = await cli(['install', who.app, '--target', opts.target])
        if (!done.ok) throw refusalOf(done.error)
        const r = done.result
        const verification = (r.verification ?? {}) as {merged?: boolean}
        notify(who.app)
        return ['a{sv}', [{AppId: v('s', who.app), Name: v('s', String(r.name)), Action: v('s', String(r.action)), Merged: v('b', verification.merged === true || r.action === 'unchanged'), Warnings: v('as', ((r.warnings ?? []) as Array<{message: string}>).map((w) => w.message))}]]
      },
    },
    RequestRemoval: {
      signature: 'a{sv}',
      usage: 'RequestRemoval takes (a{sv} options): AppId (non-Flatpak callers only).',
      run: async (msg, identity) => {
        const opts = requestOptions(msg.body[0])
        const who = subject(identity, opts.appId)
        if (who.own && readPolicy(options.policyPath, log).mode === 'disabled')
          throw new Refusal(ManagerErrors.Disabled, `App requests are disabled by the administrator (${options.policyPath}: Mode=disabled).`)
        await authorize(msg, who, {app_id: who.app, extension: who.app, bus_names: 'removed', units: 'removed', polkit_actions: 'removed', extras: 'removed', target: 'all'}, identity, 'RequestRemoval')
        log(`RequestRemoval: removing ${who.app} for ${describeIdentity(identity)} action=${who.action}`)
        // revoke: the consent goes with the extension, so sync does not merge it again.
        const done = await cli(['revoke', who.app])
        if (!done.ok) throw refusalOf(done.error)
        notify(who.app)
        return ['a{sv}', [{AppId: v('s', who.app), Removed: v('b', done.result.uninstalled !== null)}]]
      },
    },
  }

  // ExtensionChanged, unicast to each connection that asked about that app, when the status word changes.
  let checking = false
  let rerun = false
  const notify = (onlyApp?: string): void => {
    if (checking) {
      // A change during a check: check again when it is done.
      rerun = true
      return
    }
    checking = true
    void (async () => {
      // One status per app, however many of its connections listen.
      const statuses = new Map<string, Promise<Record<string, dbus.Variant> | undefined>>()
      for (const [sender, w] of watchers) {
        if (onlyApp !== undefined && w.app !== onlyApp) continue
        if (!statuses.has(w.app)) statuses.set(w.app, statusOf(w.app).catch(() => undefined))
        const status = await statuses.get(w.app)
        if (!status) continue
        const word = String(status.State.value)
        if (word === w.last && onlyApp === undefined) continue
        w.last = word
        const signal = dbus.Message.newSignal(MANAGER_OBJECT_PATH, MANAGER_INTERFACE, 'ExtensionChanged', 'sa{sv}', [w.app, status])
        signal.destination = sender
        try {
          bus.send(signal)
        } catch (err) {
          log(`could not signal ${sender}: ${(err as Error).message}`)
        }
      }
    })().finally(() => {
      checking = false
      if (rerun) {
        rerun = false
        notify()
      }
    })
  }
  let debounce: NodeJS.Timeout | undefined
  const fsWatchers: FSWatcher[] = []
  for (const dir of options.watchDirs) {
    try {
      fsWatchers.push(watch(dir, () => {
        clearTimeout(debounce)
        debounce = setTimeout(() => notify(), 1000)
      }))
    } catch {
      // not there (yet): nothing merged from it to watch
    }
  }

  const dispatch = (msg: dbus.Message, method: (typeof methods)[string]): void => {
    if ((msg.signature ?? '') !== method.signature) return fail(msg, ManagerErrors.InvalidArgs, method.usage)
    const sender = msg.sender
    const mine = inFlight.get(sender) ?? 0
    if (mine >= perCaller || inFlightTotal >= total) {
      log(`refused (in-flight calls): sender=${sender} in-flight-for-sender=${mine} in-flight=${inFlightTotal}`)
      return fail(msg, ManagerErrors.LimitsExceeded, `Too many calls waiting (${mine} from ${sender}, ${inFlightTotal} in total; limits ${perCaller} and ${total}).`)
    }
    inFlight.set(sender, mine + 1)
    inFlightTotal++
    clearTimeout(idleTimer)
    void (async () => {
      let identity: CallerIdentity
      try {
        identity = await callerIdentity(bus, sender)
      } catch (err) {
        return fail(msg, ManagerErrors.Failed, `Could not identify the caller: ${(err as Error).message}`)
      }
      try {
        const [signature, body] = await method.run(msg, identity)
        log(`${msg.member}: answered ${describeIdentity(identity)}`)
        reply(msg, signature, body)
      } catch (err) {
        if (err instanceof Refusal) {
          log(`${msg.member} refused: ${describeIdentity(identity)}: ${err.message.split('\n')[0]}`)
          return fail(msg, err.errorName, err.message)
        }
        log(`${msg.member} from ${sender} failed: ${(err as Error).message}`)
        fail(msg, ManagerErrors.Failed, (err as Error).message)
      }
    })().finally(() => {
      inFlightTotal--
      const left = (inFlight.get(sender) ?? 1) - 1
      if (left > 0) inFlight.set(sender, left)
      else inFlight.delete(sender)
      armIdle()
    })
  }

  const handle = (msg: dbus.Message): boolean => {
    const undecodable = undecodableReason()
    if (undecodable !== null) {
      log(`refused an undecodable call ${msg.interface ?? ''}.${msg.member ?? ''} from ${msg.sender}: ${undecodable}`)
      fail(msg, ManagerErrors.InvalidArgs, `The call could not be read: ${undecodable}.`)
      return true
    }
    if (msg.path !== MANAGER_OBJECT_PATH) return false
    if (msg.interface === MANAGER_INTERFACE && Object.hasOwn(methods, msg.member ?? '')) {
      dispatch(msg, methods[msg.member!])
      return true
    }
    switch (`${msg.interface}.${msg.member}`) {
      case 'org.freedesktop.DBus.Properties.Get':
        if (msg.signature === 'ss' && msg.body[0] === MANAGER_INTERFACE && msg.body[1] === 'Version') reply(msg, 'v', [v('u', 1)])
        else fail(msg, ManagerErrors.InvalidArgs, `No property ${msg.body?.[0]}.${msg.body?.[1]}.`)
        return true
      case 'org.freedesktop.DBus.Properties.GetAll':
        if (msg.signature !== 's') fail(msg, ManagerErrors.InvalidArgs, 'GetAll takes (s interface).')
        else reply(msg, 'a{sv}', [msg.body[0] === MANAGER_INTERFACE ? {Version: v('u', 1)} : {}])
        return true
      case 'org.freedesktop.DBus.Introspectable.Introspect':
        reply(msg, 's', [MANAGER_INTROSPECTION])
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
      fail(msg, ManagerErrors.Failed, 'The service could not handle the call.')
      return true
    }
  })

  // A connection that leaves is no longer told about changes.
  bus.on('message', (msg: dbus.Message) => {
    if (msg.type !== dbus.MessageType.SIGNAL || msg.member !== 'NameOwnerChanged' || msg.sender !== 'org.freedesktop.DBus' || msg.signature !== 'sss') return
    const [name, , newOwner] = msg.body as [string, string, string]
    if (newOwner === '' && name.startsWith(':') && watchers.delete(name)) armIdle()
  })

  try {
    await bus.call(new dbus.Message({
      destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'AddMatch',
      signature: 's', body: ["type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged'"],
    }))
    const got = await bus.requestName(MANAGER_BUS_NAME, dbus.NameFlag.DO_NOT_QUEUE)
    if (got !== dbus.RequestNameReply.PRIMARY_OWNER) throw new Error(`${MANAGER_BUS_NAME} is already owned`)
  } catch (err) {
    bus.disconnect()
    for (const w of fsWatchers) w.close()
    throw new HelperError('MANAGER_START_FAILED', `The install service could not start: ${(err as Error).message}.`, {cause: err})
  }
  log(`ready on ${options.testMode ? `${options.address} (test mode: polkit skipped)` : 'the system bus'} as ${MANAGER_BUS_NAME}`)
  armIdle()
  await finished
  for (const w of fsWatchers) w.close()
  clearTimeout(debounce)
  if (fatal) throw new HelperError('MANAGER_BUS_LOST', `The install service lost its bus connection: ${fatal.message}.`, {cause: fatal})
}
