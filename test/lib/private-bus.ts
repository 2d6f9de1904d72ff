/**
 * A private dbus-daemon for integration tests: its own config and socket in a
 * temporary directory, optionally run as another uid (via setpriv), stopped
 * by `stop()` (also registered with node:test's `after`, when asked).
 */
import {spawn, type ChildProcess} from 'node:child_process'
import {chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import '../../src/capture/usocket-safe.js' // dbus-next's sockets are usockets: see there

export interface PrivateBus {
  address: string
  dir: string
  pid: number
  process: ChildProcess
  stop: () => Promise<void>
}

export interface PrivateBusOptions {
  /** Run the daemon as this uid/gid (needs root). */
  uid?: number
  gid?: number
  /** Extra config inside <busconfig>. */
  extraConfig?: string
}

/** The uid/gid of `nobody` on Debian. */
export const NOBODY = {uid: 65534, gid: 65534}

export async function startPrivateBus(options: PrivateBusOptions = {}): Promise<PrivateBus> {
  const dir = mkdtempSync(join(tmpdir(), 'sysext-bus-'))
  const socket = join(dir, 'bus')
  const config = join(dir, 'bus.conf')
  writeFileSync(
    config,
    `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_message_size">134217728</limit>
  ${options.extraConfig ?? ''}
</busconfig>
`,
  )
  chmodSync(dir, 0o755)
  let argv = ['dbus-daemon', `--config-file=${config}`, '--nofork', '--print-address=1', '--nopidfile', '--nosyslog']
  if (options.uid !== undefined) {
    chownSync(dir, options.uid, options.gid ?? options.uid)
    argv = ['setpriv', `--reuid=${options.uid}`, `--regid=${options.gid ?? options.uid}`, '--clear-groups', '--', ...argv]
  }
  const child = spawn(argv[0], argv.slice(1), {stdio: ['ignore', 'pipe', 'inherit']})
  const address = await new Promise<string>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error('dbus-daemon printed no address within 10 s')), 10_000)
    child.once('error', reject)
    child.once('exit', (code) => reject(new Error(`dbus-daemon exited with ${code}`)))
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      const nl = out.indexOf('\n')
      if (nl >= 0) {
        clearTimeout(timer)
        resolve(out.slice(0, nl).trim())
      }
    })
  })
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
      child.kill('SIGTERM')
      await exited
    }
    rmSync(dir, {recursive: true, force: true})
  }
  return {address, dir, pid: child.pid!, process: child, stop}
}

/** A dbus-next client on `address` (optionally negotiating unix fds), disconnected by the caller. */
export async function connectClient(address: string, options: {unixFd?: boolean} = {}): Promise<import('dbus-next').MessageBus> {
  const dbus = await import('dbus-next')
  const bus = dbus.sessionBus({busAddress: address, negotiateUnixFd: options.unixFd === true} as import('dbus-next').SessionBusOptions)
  // The first call completes Hello.
  await bus.call(new dbus.Message({destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus', member: 'GetId'}))
  return bus
}
