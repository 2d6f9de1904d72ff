/** Adapter over systemd-sysext. Exit codes lie on old versions, so results are confirmed from /usr/.systemd-sysext. */
import {readFileSync} from 'node:fs'
import {HelperError} from '../errors.js'
import {run} from '../exec.js'

export const HIERARCHIES = ['/usr', '/opt']

export async function sysextVersion(): Promise<number> {
  const {stdout} = await run('systemd-sysext', ['--version'])
  const match = /^systemd (\d+)/.exec(stdout)
  if (!match) throw new HelperError('SYSEXT_VERSION_UNKNOWN', `Cannot read the systemd version from 'systemd-sysext --version': ${stdout.split('\n')[0]}`)
  return Number(match[1])
}

/** systemd-sysext refresh: unmerge and merge again, with every image currently linked. */
export async function refresh(timeoutMs: number): Promise<void> {
  try {
    await run('systemd-sysext', ['refresh'], {timeoutMs})
  } catch (error) {
    throw new HelperError('SYSEXT_REFRESH_FAILED', `systemd-sysext refresh failed: ${(error as Error).message}`, {
      step: 'refresh',
      hint: "Run 'systemd-sysext refresh' by hand and check 'journalctl -b -t systemd-sysext'.",
      cause: error,
    })
  }
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
