/**
 * Creates the system users and groups an extension declares in
 * usr/lib/sysusers.d/*.conf (validation has held them to new system accounts of
 * its own), by running systemd-sysusers on exactly those files once they are
 * merged, before anything is reloaded or activated. Accounts are never removed
 * (systemd's policy too: files on disk may still be owned by them).
 */
import {HelperError} from '../errors.js'
import {run} from '../exec.js'
import type {Tree} from '../sysext/tree.js'

const DIR = 'usr/lib/sysusers.d'

/** The merged paths of the trees' sysusers.d files. */
export function sysusersFiles(trees: Tree[]): string[] {
  const files = new Set<string>()
  for (const tree of trees)
    for (const entry of tree.entries.values())
      if (entry.type === 'file' && entry.path.startsWith(`${DIR}/`) && !entry.path.slice(DIR.length + 1).includes('/') && entry.path.endsWith('.conf')) files.add(`/${entry.path}`)
  return [...files].sort()
}

/** Runs `systemd-sysusers FILE…`; returns what was run (for the step's detail), or undefined when there was nothing. */
export async function createSysusers(trees: Tree[]): Promise<string | undefined> {
  const files = sysusersFiles(trees)
  if (files.length === 0) return undefined
  try {
    await run('systemd-sysusers', files, {timeoutMs: 60_000})
  } catch (error) {
    throw new HelperError('SYSUSERS_FAILED', `systemd-sysusers could not create the accounts of ${files.join(', ')}: ${(error as Error).message}`, {
      step: 'refresh', cause: error, hint: `Run 'systemd-sysusers ${files.join(' ')}' by hand to see why.`,
    })
  }
  return `systemd-sysusers ${files.join(' ')}`
}
