/** Host readiness: one check per thing install depends on, each with a fix. */
import {existsSync} from 'node:fs'
import {systemInstallations} from '../flatpak/installations.js'
import type {HelperError} from '../errors.js'
import {initSystem} from '../systemd/booted.js'
import {mergedExtensions, sysextVersion} from '../systemd/sysext.js'
import {type PackageManagerStatus, type Shadow, findShadows, packageManagerStatus, shadowFix} from './package-managers.js'
import {type HostProbe, notBootedError, probeHost} from './preflight.js'
import {DEFAULT_PATHS, readState} from './state.js'

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
  ]
}

/** Pure: the package-manager checks from their status (and the shadows found, undefined when not looked for). */
export function packageManagerChecks(pm: PackageManagerStatus, merged: string[], shadows: Shadow[] | string | undefined): DoctorCheck[] {
  const checks: DoctorCheck[] = []
  const enable = 'sysext-helper package-managers --enable'
  checks.push(pm.mode === 'off'
    ? {id: 'package-managers', ok: false, severity: 'warning', message: `Package-manager integration ${pm.reason}.`, fix: `${enable} (or unmerge around upgrades: systemd-sysext unmerge; apt upgrade; systemd-sysext refresh)`}
    : {id: 'package-managers', ok: true, severity: 'warning', message: `Package managers: ${pm.mode} (${pm.reason})${pm.managers.length ? `; found ${pm.managers.join(', ')}` : ''}.`})
  const bad = pm.files.filter((f) => f.state !== 'ok')
  if (pm.mode !== 'off' || bad.length > 0)
    checks.push(bad.length === 0 && pm.linkOk
      ? {id: 'package-manager-files', ok: true, severity: 'warning', message: `In place and as sysext-helper writes them: ${pm.files.map((f) => f.path).join(', ')}${pm.mode === 'mutable' ? ', /var/lib/extensions.mutable/usr -> /usr' : ''}.`}
      : {id: 'package-manager-files', ok: false, severity: 'warning',
        message: `Not as this mode (${pm.mode}) wants them: ${[...bad.map((f) => `${f.path} ${f.state}`), ...(pm.linkOk ? [] : ['/var/lib/extensions.mutable/usr missing'])].join(', ')}.`,
        fix: pm.mode === 'off' ? 'sysext-helper package-managers --disable (removes them)' : enable})
  if (pm.mode === 'mutable' && merged.length > 0)
    checks.push(pm.mergedMutable
      ? {id: 'mutable-merge', ok: true, severity: 'warning', message: '/usr is merged writable: package managers write the real /usr underneath.'}
      : {id: 'mutable-merge', ok: false, severity: 'warning', message: "/usr is merged read-only although the mutable mode is set up: the last merge was a plain 'systemd-sysext refresh' (or a mutable merge failed; see 'journalctl -b -t systemd-sysext').", fix: "systemd-sysext refresh --mutable=auto; if that fails, add MECHANISM=hooks to /etc/sysext-helper/package-managers.conf and run 'sysext-helper package-managers --enable'"})
  if (pm.unmergedByHook)
    checks.push({id: 'package-manager-hook', ok: false, severity: 'warning', message: 'A package-manager hook unmerged the extensions and has not merged them again (a package manager is running, or it was killed and the re-merge unit failed).', fix: 'When no package manager runs: systemd-sysext refresh'})
  if (typeof shadows === 'string') checks.push({id: 'upper-shadows', ok: true, severity: 'warning', message: shadows})
  else if (shadows)
    checks.push(shadows.length === 0
      ? {id: 'upper-shadows', ok: true, severity: 'warning', message: "The real /usr hides no file of a merged extension (no copy-up, no whiteout)."}
      : {id: 'upper-shadows', ok: false, severity: 'warning',
        message: `The real /usr (the writable merge's upper layer) hides files of merged extensions: ${shadows.slice(0, 5).map((s) => `${s.path} (${s.kind === 'whiteout' ? 'deleted: whiteout' : 'copied up'}, ${s.extension})`).join(', ')}${shadows.length > 5 ? ` and ${shadows.length - 5} more` : ''}. A write to a merged file or a deletion through the merge lands there and hides the extension's file, also after it is updated.`,
        fix: shadowFix(shadows)})
  return checks
}

async function packageManagerReport(root: boolean): Promise<DoctorCheck[]> {
  try {
    return await packageManagerChecksNow(root)
  } catch (error) {
    return [{id: 'package-managers', ok: false, severity: 'warning', message: `The package-manager integration could not be checked: ${(error as Error).message}`, fix: (error as HelperError).hint ?? 'sysext-helper package-managers'}]
  }
}

async function packageManagerChecksNow(root: boolean): Promise<DoctorCheck[]> {
  const pm = await packageManagerStatus()
  const merged = mergedExtensions('/usr')
  let shadows: Shadow[] | string | undefined
  if (pm.mergedMutable) {
    if (!root) shadows = 'Not checked for files the real /usr hides (needs root).'
    else {
      const state = readState(DEFAULT_PATHS)
      shadows = await findShadows(Object.values(state.extensions).filter((e) => merged.includes(e.name)))
    }
  }
  return packageManagerChecks(pm, merged, shadows)
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
  const checks = probe
    ? [{id: 'booted', ok: true, severity: 'error' as const, message: 'systemd runs as init.'}, ...doctorChecks(probe), ...(await packageManagerReport(probe.root))]
    : await unprobedChecks(failure)
  const installations = systemInstallations().map((i) => ({id: i.id, path: i.path, present: existsSync(i.path)}))
  return {probe, installations, checks, ok: checks.every((c) => c.ok || c.severity === 'warning')}
}
