/**
 * What the package-manager hook runs after it merged again: the reload and the
 * activation checks of install, without its validation, staging or lock.
 */
import {existsSync} from 'node:fs'
import {join} from 'node:path'
import {HelperError} from '../errors.js'
import {polkitInstalled} from '../polkit/polkit.js'
import {mergedExtensions} from '../systemd/sysext.js'
import {reloadAll, verificationProblem, verifyExtension} from './install.js'
import {DEFAULT_PATHS, readState} from './state.js'

export interface ReloadResult {
  reloaded: string
  extensions: Array<{name: string; ok: boolean; problem?: string}>
}

/** Reloads systemd, polkit and the bus, then pings every managed extension's services. Throws when one fails. */
export async function reloadAfterPackageManager(timeoutS = 25): Promise<ReloadResult> {
  const reloaded = await reloadAll(undefined, {reloadManager: false, polkit: true})
  const state = readState(DEFAULT_PATHS)
  const polkit = await polkitInstalled().catch(() => false)
  const merged = [...mergedExtensions('/usr'), ...mergedExtensions('/opt')]
  const extensions = await Promise.all(Object.values(state.extensions).map(async (record) => {
    const v = await verifyExtension(record, timeoutS, {usr: existsSync(join(record.linkTarget, 'usr')), polkit})
    const problem = merged.includes(record.name) ? verificationProblem(v) : 'it is not merged'
    return {name: record.name, ok: !problem, problem}
  }))
  const failed = extensions.filter((e) => !e.ok)
  if (failed.length > 0)
    throw new HelperError('PACKAGE_MANAGER_RELOAD_FAILED', `After the package manager's run: ${failed.map((e) => `${e.name}: ${e.problem}`).join('; ')}`, {
      step: 'verify', hint: "See 'sysext-helper status NAME' and 'journalctl -b -t systemd-sysext'; 'sysext-helper install' of the extension again repairs it.", data: {extensions},
    })
  return {reloaded, extensions}
}
