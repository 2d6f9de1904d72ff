/**
 * The system-bus calls install needs (ReloadConfig, Peer.Ping), through busctl:
 * present on every systemd host, and it auto-starts activatable names.
 */
import {HelperError} from '../errors.js'
import {run} from '../exec.js'
import {type Classified, classifyJournal, journalSince} from '../systemd/journal.js'
import {show} from '../systemd/systemctl.js'

export type BusImplementation = 'dbus-broker' | 'dbus-daemon' | 'unknown'


export async function reloadConfig(): Promise<void> {
  await run('busctl', ['--system', 'call', 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'ReloadConfig'], {timeoutMs: 30_000})
}

export async function busReachable(): Promise<boolean> {
  try {
    await run('busctl', ['--system', 'call', 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'GetId'], {timeoutMs: 10_000})
    return true
  } catch {
    return false
  }
}

export interface PingFailure {
  /** Short cause id, stable (part of --json). */
  cause: 'not-activatable' | 'exec-failed' | 'exited' | 'disconnected' | 'access-denied' | 'timeout' | 'stale-owner' | 'other'
  /** What busctl said. */
  detail: string
  /** What that means for this extension and what to run next. */
  diagnosis: string
  /** The cause read from the journal (missing library, symbol version, user, …), when recognised. */
  journalCause?: Classified
  /** The failed unit's journal lines since the attempt (or the system's, for a service-file-only activation). */
  journal?: string[]
}

/** Adds what the journal says since `since` to a failure: the lines, and the cause quoted first in the diagnosis. */
export async function withJournal(failure: PingFailure, since: number, name: string, unit?: string): Promise<PingFailure> {
  let lines: string[] = []
  let cause: Classified | undefined
  // journald may write the service's last lines a moment after the failure is seen.
  for (const wait of [250, 750]) {
    await new Promise((r) => setTimeout(r, wait))
    lines = await journalSince(since, unit, [name, ...(unit ? [unit] : [])])
    cause = classifyJournal(lines)
    if (cause) break
  }
  if (lines.length === 0) return failure
  const quoted = cause ? `Cause: ${cause.summary}; the journal says: "${cause.line}". ` : `The journal says: "${lines.slice(-3).join(' | ')}". `
  return {...failure, journal: lines, journalCause: cause, diagnosis: quoted + failure.diagnosis}
}

/** Maps a failed activation to its likely cause (REFERENCE: errors seen from both bus implementations). */
export function diagnosePing(name: string, detail: string, unit?: string): PingFailure {
  const journal = unit ? `journalctl -b -u ${unit}` : `journalctl -b | grep ${name}`
  const rules: Array<[RegExp, PingFailure['cause'], string]> = [
    [/not activatable|not provided by any \.service|ServiceUnknown|was not provided/i, 'not-activatable',
      `The bus does not know a service file for ${name}: it was not merged, or the bus did not reload its configuration (check Name= and the file name).`],
    [/Cannot launch daemon|file not found or permissions invalid|Failed to execute|No such file/i, 'exec-failed',
      `The bus could not execute the service's Exec= binary: missing, not executable, or it needs a library the host lacks (run 'sysext-helper validate').`],
    [/exited|ChildExited|Launch helper|unit failed|UnitFailed|activation request failed|startup job failed/i, 'exited',
      `The service started and exited before taking its name. See '${journal}'.`],
    [/Remote peer disconnected|NoReply|disconnected/i, 'disconnected', `The service started, then died or dropped its connection. See '${journal}'.`],
    [/Access denied|AccessDenied|not allowed to own|Rejected send/i, 'access-denied',
      `The bus policy denies it: the extension's usr/share/dbus-1/system.d policy was not loaded or does not allow this. Check 'busctl --system call org.freedesktop.DBus / org.freedesktop.DBus ReloadConfig' and the policy.`],
    [/timed out|Timeout|did not finish/i, 'timeout', `No answer in time: the service hangs at start or activation is stuck. See '${journal}'.`],
  ]
  for (const [re, cause, diagnosis] of rules) if (re.test(detail)) return {cause, detail, diagnosis}
  return {cause: 'other', detail, diagnosis: `See '${journal}'.`}
}

async function unitFailed(unit: string): Promise<boolean> {
  const {ActiveState} = await show(unit, ['ActiveState'])
  return ActiveState === 'failed'
}

/**
 * Peer.Ping on a well-known name, auto-starting it. Returns undefined on success.
 * When activation goes through a unit, a unit that fails ends the wait at once
 * (dbus-daemon would otherwise keep the call pending until the timeout).
 */
export async function ping(name: string, timeoutS: number, unit?: string): Promise<PingFailure | undefined> {
  if (unit && (await unitFailed(unit))) await run('systemctl', ['reset-failed', unit])
  const abort = new AbortController()
  let failedUnit = false
  const watch = unit
    ? (async () => {
        while (!abort.signal.aborted) {
          await new Promise((r) => setTimeout(r, 200))
          if (!abort.signal.aborted && (await unitFailed(unit).catch(() => false))) {
            failedUnit = true
            abort.abort()
          }
        }
      })()
    : Promise.resolve()
  const since = Date.now()
  try {
    await run('busctl', ['--system', `--timeout=${timeoutS}`, 'call', name, '/', 'org.freedesktop.DBus.Peer', 'Ping'], {timeoutMs: (timeoutS + 5) * 1000, signal: abort.signal})
    return undefined
  } catch (error) {
    if (failedUnit) return withJournal(diagnosePing(name, `unit failed: ${unit} entered the failed state during activation`, unit), since, name, unit)
    const detail = error instanceof HelperError ? error.message.replace(/^.*failed \(exit \d+\): ?/, '').replace(/^Call failed: /, '') : String(error)
    return withJournal(diagnosePing(name, detail, unit), since, name, unit)
  } finally {
    abort.abort()
    await watch
  }
}

/** PID of the connection that owns `name` now (no auto-start), or undefined when nobody owns it. */
export async function nameOwnerPid(name: string): Promise<number | undefined> {
  try {
    const {stdout} = await run('busctl', ['--system', 'call', 'org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus', 'GetConnectionUnixProcessID', 's', name], {timeoutMs: 10_000})
    const pid = Number(stdout.trim().split(/\s+/)[1])
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}
