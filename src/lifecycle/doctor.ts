/** Host readiness: one check per thing install depends on, each with a fix. */
import {existsSync} from 'node:fs'
import {systemInstallations} from '../flatpak/installations.js'
import type {HelperError} from '../errors.js'
import {initSystem} from '../systemd/booted.js'
import {sysextVersion} from '../systemd/sysext.js'
import {type HostProbe, notBootedError, probeHost} from './preflight.js'

export interface DoctorCheck {
  id: string
  ok: boolean
  /** 'error': install will fail; 'warning': it works with a caveat. */
  severity: 'error' | 'warning'
  message: string
  fix?: string
}

export interface DoctorReport {
  probe: HostProbe | null
  installations: Array<{id: string; path: string; present: boolean}>
  checks: DoctorCheck[]
  ok: boolean
}

/** Pure: checks from a probe. */
export function doctorChecks(probe: HostProbe): DoctorCheck[] {
  const check = (id: string, ok: boolean, severity: DoctorCheck['severity'], message: string, fix?: string): DoctorCheck => ({id, ok, severity, message, fix: ok ? undefined : fix})
  return [
    check('root', probe.root, 'error', probe.root ? 'Running as root.' : 'Not running as root: install and uninstall will refuse.', 'Run with sudo.'),
    check('systemd-sysext', probe.systemdVersion >= 248, 'error', `systemd-sysext ${probe.systemdVersion}.`, 'Upgrade systemd to >= 248.'),
    check('sysext-boot', probe.sysextServiceEnabled === 'enabled', 'warning', `systemd-sysext.service is ${probe.sysextServiceEnabled} (merges ${probe.sysextServiceEnabled === 'enabled' ? 'come back' : 'do not come back'} after reboot).`, 'systemctl enable systemd-sysext.service'),
    check('system-bus', probe.bus.reachable, 'error', probe.bus.reachable ? `System bus reachable (${probe.bus.implementation}).` : 'System bus not reachable.', 'systemctl start dbus.service'),
    check('polkit', probe.polkit.installed, 'warning', probe.polkit.installed ? `polkit ${probe.polkit.version ?? ''} installed (${probe.polkit.active ? 'running' : 'started on demand'}).` : 'polkit is not installed: actions cannot be verified and services cannot authorize callers.', 'apt install polkitd'),
    check('selinux', probe.selinux !== 'enforcing', 'warning', `SELinux ${probe.selinux}.`, 'Merged files keep their source labels; relabel staged trees or expect AVC denials.'),
    check('mutable-usr', probe.mutableSupported, 'warning', probe.mutableSupported ? 'systemd >= 256: /usr can stay writable while merged (--mutable).' : `systemd ${probe.systemdVersion}: /usr is read-only while an extension is merged; package upgrades need 'systemd-sysext unmerge' first.`, "Unmerge before package upgrades: systemd-sysext unmerge; apt upgrade; systemd-sysext refresh"),
  ]
}

/**
 * Without a probe (the probe needs a booted systemd): what can still be told
 * truthfully — whether systemd runs as init, whether systemd-sysext is installed
 * and which version — each with its own fix.
 */
async function unprobedChecks(failure: unknown): Promise<DoctorCheck[]> {
  const init = initSystem()
  const version = await sysextVersion().catch(() => undefined)
  const checks: DoctorCheck[] = [
    version === undefined
      ? {id: 'systemd-sysext', ok: false, severity: 'error', message: 'systemd-sysext is not installed (or does not run).', fix: 'Install systemd >= 248 (Debian: package systemd).'}
      : {id: 'systemd-sysext', ok: version >= 248, severity: 'error', message: `systemd-sysext ${version}.`, fix: version >= 248 ? undefined : 'Upgrade systemd to >= 248.'},
  ]
  if (!init.booted)
    checks.unshift({id: 'booted', ok: false, severity: 'error', message: notBootedError(init.pid1).message, fix: notBootedError(init.pid1).hint})
  else
    checks.push({id: 'probe', ok: false, severity: 'error', message: `The host could not be probed: ${(failure as Error).message}`, fix: (failure as HelperError).hint ?? 'systemctl status'})
  return checks
}

export async function doctor(): Promise<DoctorReport> {
  let failure: unknown
  const probe = await probeHost({polkitVersion: true}).catch((error: unknown) => {
    failure = error
    return null
  })
  const checks = probe ? [{id: 'booted', ok: true, severity: 'error' as const, message: 'systemd runs as init.'}, ...doctorChecks(probe)] : await unprobedChecks(failure)
  const installations = systemInstallations().map((i) => ({id: i.id, path: i.path, present: existsSync(i.path)}))
  return {probe, installations, checks, ok: checks.every((c) => c.ok || c.severity === 'warning')}
}
