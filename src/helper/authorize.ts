/** polkit and caller identity, for the helper service (system mode only for polkit). */
import {readFileSync} from 'node:fs'
import dbus from 'dbus-next'
import {HELPER_POLKIT_ACTION} from './constants.js'

export type Authorization = 'authorized' | 'denied' | 'dismissed'

/** CheckAuthorization on subject system-bus-name = `sender`, allowing interaction (an agent may ask for a password). */
export async function checkAuthorization(bus: dbus.MessageBus, sender: string): Promise<Authorization> {
  const reply = await bus.call(
    new dbus.Message({
      destination: 'org.freedesktop.PolicyKit1',
      path: '/org/freedesktop/PolicyKit1/Authority',
      interface: 'org.freedesktop.PolicyKit1.Authority',
      member: 'CheckAuthorization',
      signature: '(sa{sv})sa{ss}us',
      body: [['system-bus-name', {name: new dbus.Variant('s', sender)}], HELPER_POLKIT_ACTION, {}, 1, ''],
    }),
  )
  const [authorized, , details] = (reply?.body[0] ?? [false, false, {}]) as [boolean, boolean, Record<string, string>]
  if (authorized) return 'authorized'
  return details['polkit.dismissed'] ? 'dismissed' : 'denied'
}

export interface CallerIdentity {
  uid: number
  pid?: number
  /** The Flatpak app id, when the caller runs in a Flatpak sandbox. */
  flatpakApp?: string
}

/**
 * Who called: from GetConnectionCredentials. Used for limits and the audit
 * log; it may only narrow access, never grant it.
 */
export async function callerIdentity(bus: dbus.MessageBus, sender: string): Promise<CallerIdentity> {
  const reply = await bus.call(
    new dbus.Message({
      destination: 'org.freedesktop.DBus',
      path: '/org/freedesktop/DBus',
      interface: 'org.freedesktop.DBus',
      member: 'GetConnectionCredentials',
      signature: 's',
      body: [sender],
    }),
  )
  const creds = (reply?.body[0] ?? {}) as Record<string, {value: unknown}>
  const uid = Number(creds.UnixUserID?.value ?? -1)
  const pid = creds.ProcessID === undefined ? undefined : Number(creds.ProcessID.value)
  const pidfd = creds.ProcessFD === undefined ? undefined : Number(creds.ProcessFD.value)
  const identity: CallerIdentity = {uid, pid}
  if (pid !== undefined) identity.flatpakApp = flatpakAppOf(pid, pidfd)
  if (pidfd !== undefined) {
    const {closeSync} = await import('node:fs')
    try {
      closeSync(pidfd)
    } catch {
      // not ours after all
    }
  }
  return identity
}

/**
 * The app id from /proc/PID/root/.flatpak-info. With a pidfd, the answer is
 * kept only if the pidfd still names that pid afterwards (no pid reuse
 * in between); without one it is best effort, for the log only.
 */
export function flatpakAppOf(pid: number, pidfd?: number): string | undefined {
  let info: string
  try {
    info = readFileSync(`/proc/${pid}/root/.flatpak-info`, 'utf8')
  } catch {
    // Without CAP_SYS_PTRACE (the hardened unit has none) another uid's
    // /proc/PID/root is closed; the scope flatpak puts the app in still names it.
    return flatpakAppFromCgroup(pid, pidfd)
  }
  if (pidfd !== undefined) {
    try {
      const fdinfo = readFileSync(`/proc/self/fdinfo/${pidfd}`, 'utf8')
      const m = /^Pid:\s*(-?\d+)/m.exec(fdinfo)
      if (!m || Number(m[1]) !== pid) return undefined
    } catch {
      return undefined
    }
  }
  const section = /^\[Application\]\s*$([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(info)
  const name = section ? /^name=(.+)$/m.exec(section[1]) : null
  return name?.[1].trim()
}

/** The app id from the `app-flatpak-ID-N.scope` systemd scope flatpak runs apps in (audit only). */
function flatpakAppFromCgroup(pid: number, pidfd?: number): string | undefined {
  try {
    const cgroup = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    const m = /app-flatpak-(.+?)-\d+\.scope/.exec(cgroup)
    if (!m) return undefined
    if (pidfd !== undefined) {
      const p = /^Pid:\s*(-?\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${pidfd}`, 'utf8'))
      if (!p || Number(p[1]) !== pid) return undefined
    }
    return m[1].replace(/\\x2d/g, '-')
  } catch {
    return undefined
  }
}
