/**
 * Who is calling a system service: uid and pid from the bus, and the Flatpak
 * app id from the caller's own `/.flatpak-info`, read through
 * `/proc/PID/root/.flatpak-info` with the process pinned, so that a pid
 * reused by another process cannot lend its identity:
 *
 * - `pidfd` (strong): the bus hands over a pidfd in GetConnectionCredentials
 *   (`ProcessFD`, dbus-daemon >= 1.15.7, dbus-broker >= 34), taken when the
 *   caller connected. After the file is read, the pidfd must still name that
 *   pid and that process must still be running (fdinfo `Pid:` equal, not -1),
 *   and its start time must not have changed: the file was then read from
 *   the very process that is connected.
 * - `procfd` (where the bus gives no pidfd: dbus-daemon 1.14): Node cannot
 *   call pidfd_open(2), so the process's /proc/PID directory is opened as an
 *   fd and stat, status, cgroup and root/.flatpak-info are read through
 *   /proc/self/fd/N/...: that procfs directory stays bound to the process it
 *   was opened for (reads fail with ESRCH once it exits), so a pid reused
 *   after the open cannot lend its identity. The uid must be the bus's and
 *   the start time unchanged across the read; then GetConnectionCredentials
 *   is asked again and must still name that pid for the sender. What remains
 *   is a process that exited and whose pid was reused *before* the open while
 *   its connection stayed open in another process: the bus recorded the pid
 *   at connect time and cannot tell.
 *
 * The `app-flatpak-ID-N.scope` cgroup name is recorded only as a cross-check:
 * any user can create such a scope. Identity is for the audit log and for
 * narrowing access, never for granting it: polkit decides.
 *
 * Reading another uid's /proc/PID/root needs CAP_SYS_PTRACE; without it the
 * app is reported as unknown (`pinned: 'unreadable'`), never guessed.
 */
import {closeSync, constants, openSync, readFileSync} from 'node:fs'
import dbus from 'dbus-next'
import {callClaimingFds} from './dbus-guard.js'

export type Pinning = 'pidfd' | 'procfd' | 'unreadable' | 'not-flatpak' | 'raced' | 'no-pid'

export interface CallerIdentity {
  uid: number
  pid?: number
  /** The Flatpak app id from the caller's /.flatpak-info, only when read with the process pinned. */
  flatpakApp?: string
  /** How the app id (or its absence) was established. */
  pinned: Pinning
  /** The app id a `app-flatpak-ID-N.scope` cgroup names: a cross-check, never proof. */
  scopeApp?: string
}

/** One line for the audit log. */
export function describeIdentity(id: CallerIdentity): string {
  const app = id.flatpakApp ? ` app=${id.flatpakApp}` : ''
  const scope = id.scopeApp && id.scopeApp !== id.flatpakApp ? ` scope-app=${id.scopeApp}(unverified)` : ''
  return `uid=${id.uid} pid=${id.pid ?? '?'}${app} identity=${id.pinned}${scope}`
}

/** Start time of a process in clock ticks since boot, and its real uid, from its /proc/PID directory `dir`; undefined when it is gone. */
export function processStamp(dir: string): {start: string; uid: number} | undefined {
  try {
    const stat = readFileSync(`${dir}/stat`, 'latin1')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const status = readFileSync(`${dir}/status`, 'latin1')
    const uid = /^Uid:\s+(\d+)/m.exec(status)
    if (!uid) return undefined
    return {start: fields[19], uid: Number(uid[1])} // field 22 of stat = index 19 after "pid (comm) "
  } catch {
    return undefined
  }
}

/** The pid a pidfd of ours names (-1 once the process has exited, on kernels that say so), or undefined. */
function pidfdPid(pidfd: number): number | undefined {
  try {
    const m = /^Pid:\s*(-?\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${pidfd}`, 'utf8'))
    return m ? Number(m[1]) : undefined
  } catch {
    return undefined
  }
}

/** `[Application] name=` of a .flatpak-info key file. */
export function appFromFlatpakInfo(text: string): string | undefined {
  const section = /^\[Application\]\s*$([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(text)
  const name = section ? /^name=(.+)$/m.exec(section[1]) : null
  const id = name?.[1].trim()
  return id && /^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)+$/.test(id) ? id : undefined
}

function scopeAppOf(dir: string): string | undefined {
  try {
    const m = /app-flatpak-(.+?)-\d+\.scope/.exec(readFileSync(`${dir}/cgroup`, 'utf8'))
    return m?.[1].replace(/\\x2d/g, '-')
  } catch {
    return undefined
  }
}

/**
 * The Flatpak identity of process `pid` (uid `uid` by the bus), read through
 * an fd of its /proc/PID directory and pinned with `pidfd` when given.
 * Exported for tests (`proc` points at a fake /proc there).
 */
export function flatpakIdentity(pid: number, uid: number, pidfd?: number, proc = '/proc'): Pick<CallerIdentity, 'flatpakApp' | 'pinned' | 'scopeApp'> {
  let dirFd: number
  try {
    dirFd = openSync(`${proc}/${pid}`, constants.O_RDONLY | constants.O_DIRECTORY)
  } catch {
    return {pinned: 'raced'}
  }
  try {
    const dir = `/proc/self/fd/${dirFd}`
    const scopeApp = scopeAppOf(dir)
    const before = processStamp(dir)
    if (!before || before.uid !== uid) return {pinned: 'raced', scopeApp}
    if (pidfd !== undefined && pidfdPid(pidfd) !== pid) return {pinned: 'raced', scopeApp}
    let text: string | undefined
    let absent = false
    try {
      text = readFileSync(`${dir}/root/.flatpak-info`, 'utf8')
    } catch (err) {
      absent = (err as NodeJS.ErrnoException).code === 'ENOENT'
    }
    const after = processStamp(dir)
    if (!after || after.start !== before.start || after.uid !== uid) return {pinned: 'raced', scopeApp}
    if (pidfd !== undefined && pidfdPid(pidfd) !== pid) return {pinned: 'raced', scopeApp}
    const pinned: Pinning = pidfd !== undefined ? 'pidfd' : 'procfd'
    if (text === undefined) return {pinned: absent ? 'not-flatpak' : 'unreadable', scopeApp}
    const app = appFromFlatpakInfo(text)
    return app ? {flatpakApp: app, pinned, scopeApp} : {pinned: 'not-flatpak', scopeApp}
  } finally {
    closeSync(dirFd)
  }
}

interface Credentials {
  uid: number
  pid?: number
  pidfd?: number
  fds: number[]
}

async function credentials(bus: dbus.MessageBus, sender: string): Promise<Credentials> {
  const {reply, fds} = await callClaimingFds(
    bus,
    new dbus.Message({
      destination: 'org.freedesktop.DBus',
      path: '/org/freedesktop/DBus',
      interface: 'org.freedesktop.DBus',
      member: 'GetConnectionCredentials',
      signature: 's',
      body: [sender],
    }),
  )
  const creds = (reply?.body?.[0] ?? {}) as Record<string, {value: unknown} | undefined>
  const pid = creds.ProcessID === undefined ? undefined : Number(creds.ProcessID.value)
  return {
    uid: Number(creds.UnixUserID?.value ?? -1),
    pid: pid !== undefined && Number.isSafeInteger(pid) && pid > 0 ? pid : undefined,
    pidfd: typeof creds.ProcessFD?.value === 'number' && fds.includes(creds.ProcessFD.value) ? creds.ProcessFD.value : undefined,
    fds,
  }
}

function closeAll(fds: number[]): void {
  for (const fd of fds) {
    try {
      closeSync(fd)
    } catch {
      // not open
    }
  }
}

/** Who sent a message: GetConnectionCredentials, then the pinned Flatpak identity (without a pidfd: asked again after the read). */
export async function callerIdentity(bus: dbus.MessageBus, sender: string): Promise<CallerIdentity> {
  const first = await credentials(bus, sender)
  try {
    if (first.pid === undefined) return {uid: first.uid, pinned: 'no-pid'}
    const found = flatpakIdentity(first.pid, first.uid, first.pidfd)
    if (first.pidfd === undefined && found.pinned !== 'raced') {
      const again = await credentials(bus, sender).catch(() => undefined)
      if (again) closeAll(again.fds)
      if (!again || again.pid !== first.pid || again.uid !== first.uid) return {uid: first.uid, pid: first.pid, pinned: 'raced', scopeApp: found.scopeApp}
    }
    return {uid: first.uid, pid: first.pid, ...found}
  } finally {
    closeAll(first.fds)
  }
}
