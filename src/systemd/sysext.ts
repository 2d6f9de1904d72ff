/** Adapter over systemd-sysext. Exit codes lie on old versions, so results are confirmed from /usr/.systemd-sysext. */
import {readFileSync, readlinkSync} from 'node:fs'
import {HelperError} from '../errors.js'
import {run} from '../exec.js'

export const HIERARCHIES = ['/usr', '/opt']

export async function sysextVersion(): Promise<number> {
  const {stdout} = await run('systemd-sysext', ['--version'])
  const match = /^systemd (\d+)/.exec(stdout)
  if (!match) throw new HelperError('SYSEXT_VERSION_UNKNOWN', `Cannot read the systemd version from 'systemd-sysext --version': ${stdout.split('\n')[0]}`)
  return Number(match[1])
}

/**
 * systemd's own switch for a writable merge (v256+): with this symlink to /usr, `--mutable=auto`
 * makes the host's real /usr the overlay's upper layer, so package managers keep writing to it.
 */
export const MUTABLE_LINK = '/var/lib/extensions.mutable/usr'

let version: Promise<number> | undefined
/** sysextVersion(), asked once per process. */
function cachedVersion(): Promise<number> {
  version ??= sysextVersion()
  return version
}

/** Whether the mutable mode is set up (the symlink /var/lib/extensions.mutable/usr -> /usr). */
export function mutableConfigured(link = MUTABLE_LINK): boolean {
  try {
    return readlinkSync(link).replace(/\/+$/, '') === '/usr'
  } catch {
    return false
  }
}

/** One /proc/self/mountinfo line, the parts used here. */
export interface MountEntry {
  mountPoint: string
  fsType: string
  source: string
  superOptions: string
}

export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = []
  for (const line of text.split('\n')) {
    const fields = line.split(' ')
    const dash = fields.indexOf('-')
    if (dash < 6) continue
    const unescape = (v: string): string => v.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
    out.push({mountPoint: unescape(fields[4]), fsType: fields[dash + 1], source: unescape(fields[dash + 2] ?? ''), superOptions: fields[dash + 3] ?? ''})
  }
  return out
}

function mounts(): MountEntry[] {
  try {
    return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'))
  } catch {
    return []
  }
}

/** systemd-sysext's own overlay on `hierarchy` (source "sysext"), the topmost one, if merged. */
export function sysextOverlay(hierarchy = '/usr', entries = mounts()): MountEntry | undefined {
  return entries.filter((m) => m.mountPoint === hierarchy && m.fsType === 'overlay' && m.source === 'sysext').at(-1)
}

/** The merge on `hierarchy` is writable: its overlay has an upper layer. */
export function mergedMutable(hierarchy = '/usr', entries = mounts()): boolean {
  return /(^|,)upperdir=/.test(sysextOverlay(hierarchy, entries)?.superOptions ?? '')
}

/**
 * The filesystem /usr really lives on (under any sysext overlay): a separate /usr mount,
 * else the root's. Used to tell whether it can be an overlay upper layer.
 */
export function usrFilesystem(entries = mounts()): MountEntry | undefined {
  const own = entries.filter((m) => m.source !== 'sysext')
  return own.filter((m) => m.mountPoint === '/usr').at(-1) ?? own.filter((m) => m.mountPoint === '/').at(-1)
}

export interface RefreshResult {
  mutable: boolean
  /** Set when a mutable merge failed and the read-only one was done instead: why. */
  fallback?: string
}

/**
 * systemd-sysext refresh: unmerge and merge again, with every image currently linked.
 * When the mutable mode is set up (and systemd >= 256) every refresh keeps it
 * (`--mutable=auto`): a plain refresh would make /usr read-only again. If that merge
 * fails (e.g. /usr's filesystem cannot be an overlay upper layer), a read-only
 * refresh follows at once, so the host is never left unmerged.
 */
export async function refresh(timeoutMs: number): Promise<RefreshResult> {
  const merge = (args: string[]) => run('systemd-sysext', ['refresh', ...args], {timeoutMs})
  let fallback: string | undefined
  if (mutableConfigured() && (await cachedVersion().catch(() => 0)) >= 256) {
    try {
      await merge(['--mutable=auto'])
      return {mutable: true}
    } catch (error) {
      fallback = (error as Error).message
    }
  }
  try {
    await merge(fallback === undefined ? [] : ['--mutable=no'])
  } catch (error) {
    throw new HelperError('SYSEXT_REFRESH_FAILED', `systemd-sysext refresh failed: ${(error as Error).message}`, {
      step: 'refresh',
      hint: "Run 'systemd-sysext refresh' by hand and check 'journalctl -b -t systemd-sysext'.",
      cause: error,
    })
  }
  return {mutable: false, fallback}
}

/** Names merged into a hierarchy right now (empty when it is not merged). */
export function mergedExtensions(hierarchy = '/usr'): string[] {
  try {
    return readFileSync(`${hierarchy}/.systemd-sysext/extensions`, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean)
  } catch {
    return []
  }
}

export interface SysextImage {
  name: string
  type: string
  path: string
}

/** Every image systemd-sysext discovers in its search paths. */
export async function listImages(): Promise<SysextImage[]> {
  const {stdout} = await run('systemd-sysext', ['list', '--json=short'])
  if (stdout.trim() === '') return []
  const parsed = JSON.parse(stdout) as Array<{name: string; type: string; path: string}>
  return parsed.map(({name, type, path}) => ({name, type, path}))
}
