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
import {findApp, looksLikeAppId} from '../flatpak/installations.js'
import {checkAuthorization} from './authorize.js'
import {type CallerIdentity, callerIdentity, describeIdentity} from './caller-identity.js'
import {type CliCommand, type CliError, type CliOutcome, runCli} from './cli-run.js'
import {InFlight, STANDARD_INTERFACES, serve, serviceFrame} from './bus-service.js'
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
${STANDARD_INTERFACES}</node>
`

/** A refusal for the caller: D-Bus error name and text. */
class Refusal extends Error {
  constructor(readonly errorName: string, message: string) {
    super(message)
  }
}
const v = (sig: string, value: unknown): dbus.Variant => new dbus.Variant(sig, value)
const strings = (x: unknown): string[] => (Array.isArray(x) ? x.map(String) : [])

/** The CLI's error as the caller sees it: validation findings become Refused, with the findings in the text. */
function refusalOf(error: CliError): Refusal {
  const findings = Array.isArray(error.data?.findings) ? (error.data.findings as Array<{rule: string; file: string; message: string}>) : []
  if (findings.length > 0)
    return new Refusal(ManagerErrors.Refused, `${error.message}\n${findings.map((f) => `${f.rule}: ${f.file}: ${f.message}`).join('\n')}`)
  if (error.code === 'APP_HAS_NO_EXTENSIONS') return new Refusal(ManagerErrors.NoExtension, error.message)
  if (error.code === 'TREE_CHANGED') return new Refusal(ManagerErrors.Changed, `${error.message} (${error.hint})`)
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
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`))
  const frameOptions = {what: 'the install service', code: 'MANAGER', address: options.address, testMode: options.testMode, log}
  const frame = serviceFrame(frameOptions)
  const {bus, reply, fail} = frame

  // Apps that asked, by connection: told when their extension's status changes.
  const watchers = new Map<string, {app: string; last: string}>()
  const inFlight = new InFlight(options.inFlightPerCaller ?? 2, options.inFlightTotal ?? 16)
  let idleTimer: NodeJS.Timeout | undefined
  const armIdle = (): void => {
    clearTimeout(idleTimer)
    if (inFlight.total > 0 || watchers.size > 0) return
    idleTimer = setTimeout(() => {
      log('idle: exiting')
      bus.disconnect()
      frame.finish()
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

  /** A request's options and whom it is for; refused when the admin disabled the apps' own requests. */
  const request = (msg: dbus.Message, identity: CallerIdentity, fix?: (app: string) => string): {opts: ReturnType<typeof requestOptions>; who: ReturnType<typeof subject>} => {
    const opts = requestOptions(msg.body[0])
    const who = subject(identity, opts.appId)
    if (who.own && readPolicy(options.policyPath, log).mode === 'disabled')
      throw new Refusal(ManagerErrors.Disabled, `App requests are disabled by the administrator (${options.policyPath}: Mode=disabled)${fix?.(who.app) ?? ''}.`)
    return {opts, who}
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
        const {opts, who} = request(msg, identity, (app) => `; ask them to run 'sysext-helper install ${app}'`)
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
        // Exactly the tree the dialog described: a Flatpak update in between is refused, not installed unseen.
        const done = await cli(['install', who.app, '--target', opts.target, '--expect-hash', String(dry.result.hash)])
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
        const {who} = request(msg, identity)
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
    const slot = inFlight.take(sender)
    if ('refused' in slot) {
      log(`refused (in-flight calls): ${slot.refused}`)
      return fail(msg, ManagerErrors.LimitsExceeded, `Too many calls waiting (${slot.refused}).`)
    }
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
      slot.release()
      armIdle()
    })
  }

  try {
    await serve(frame, {
      name: MANAGER_BUS_NAME, path: MANAGER_OBJECT_PATH, interface: MANAGER_INTERFACE, introspection: MANAGER_INTROSPECTION,
      properties: () => ({Version: v('u', 1)}), errors: ManagerErrors,
      call: (msg) => {
        if (!Object.hasOwn(methods, msg.member ?? '')) return false
        dispatch(msg, methods[msg.member!])
        return true
      },
      // A connection that leaves is no longer told about changes.
      peerLeft: (name) => {
        if (watchers.delete(name)) armIdle()
      },
    }, frameOptions)
  } catch (err) {
    for (const w of fsWatchers) w.close()
    throw err
  }
  armIdle()
  await frame.finished
  for (const w of fsWatchers) w.close()
  clearTimeout(debounce)
  frame.throwIfBusLost()
}
