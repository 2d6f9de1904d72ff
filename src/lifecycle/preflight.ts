/** What the host offers: probed once per run, reported by install and doctor. */
import {existsSync, readFileSync} from 'node:fs'
import {type BusImplementation, busReachable} from '../dbus/bus-calls.js'
import {HelperError} from '../errors.js'
import {POLKIT_UNIT, polkitVersion} from '../polkit/polkit.js'
import {showUnits} from '../systemd/systemctl.js'
import {initSystem} from '../systemd/booted.js'
import {sysextVersion} from '../systemd/sysext.js'

export interface HostProbe {
  root: boolean
  systemdVersion: number
  bus: {reachable: boolean; implementation: BusImplementation}
  /** installed: the unit exists (polkit is often bus-activated, so not running until used). */
  polkit: {installed: boolean; active: boolean; version?: string}
  selinux: 'enforcing' | 'permissive' | 'disabled'
  /** systemd-sysext.service enabled: merges come back after reboot. */
  sysextServiceEnabled: string
}

function selinuxMode(): HostProbe['selinux'] {
  if (!existsSync('/sys/fs/selinux/enforce')) return 'disabled'
  return readFileSync('/sys/fs/selinux/enforce', 'utf8').trim() === '1' ? 'enforcing' : 'permissive'
}

/** What install, uninstall, sync and the other host-changing commands need first: a running systemd. */
export function notBootedError(pid1: string | undefined): HelperError {
  return new HelperError('NOT_BOOTED_WITH_SYSTEMD',
    `This machine is not running systemd as its init system${pid1 ? ` (PID 1 is '${pid1}')` : ''}: merging extensions, reloading units and activating D-Bus services need a booted systemd host.`, {
      step: 'preflight',
      hint: "Run sysext-helper on a booted systemd host (a VM or a machine, not a plain container or chroot). To try it here, 'npm run demo' in a clone boots a real Debian host with systemd-nspawn; 'sysext-helper validate' works anywhere.",
    })
}

/** Probes the host with three processes run together; `polkitVersion` adds a fourth (doctor). */
export async function probeHost(options: {polkitVersion?: boolean} = {}): Promise<HostProbe> {
  const init = initSystem()
  if (!init.booted) throw notBootedError(init.pid1)
  const [systemdVersion, reachable, [dbus, polkit, sysext], version] = await Promise.all([
    sysextVersion().catch((error: unknown) => {
      throw new HelperError('SYSEXT_MISSING', `systemd-sysext is not usable on this host: ${(error as Error).message}`, {
        step: 'preflight',
        hint: 'systemd-sysext ships with systemd >= 248 (Debian: package systemd).',
        cause: error,
      })
    }),
    busReachable(),
    showUnits(['dbus.service', POLKIT_UNIT, 'systemd-sysext.service'], ['Id', 'LoadState', 'ActiveState', 'UnitFileState']),
    options.polkitVersion ? polkitVersion() : Promise.resolve(undefined),
  ])
  return {
    root: process.getuid?.() === 0,
    systemdVersion,
    bus: {reachable, implementation: dbus.Id?.startsWith('dbus-broker') ? 'dbus-broker' : dbus.Id === 'dbus.service' ? 'dbus-daemon' : 'unknown'},
    // polkit is usually bus-activated: installed (unit loaded) but not running until first used.
    polkit: {installed: polkit.LoadState === 'loaded', active: polkit.ActiveState === 'active', version},
    selinux: selinuxMode(),
    sysextServiceEnabled: sysext.UnitFileState || 'unknown',
  }
}

export interface ProbeWarning {
  message: string
  hint: string
}

/** Conditions that don't stop an install but that the admin should know about. */
export function probeWarnings(probe: HostProbe, target: 'runtime' | 'local' | 'persistent'): ProbeWarning[] {
  const out: ProbeWarning[] = []
  if (probe.selinux === 'enforcing')
    out.push({message: 'SELinux is enforcing: merged files keep the labels of their source, and services may be denied.', hint: "If activation fails, check 'ausearch -m avc -ts recent' and relabel the staged tree."})
  if (target !== 'runtime' && probe.sysextServiceEnabled !== 'enabled')
    out.push({message: `systemd-sysext.service is ${probe.sysextServiceEnabled}: the extension will not be merged again after a reboot.`, hint: 'systemctl enable systemd-sysext.service'})
  if (!probe.polkit.installed)
    out.push({message: 'polkit is not installed: polkit actions cannot be verified, and services cannot authorize callers.', hint: 'apt install polkitd'})
  return out
}
