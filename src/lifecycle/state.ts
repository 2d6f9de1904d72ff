/**
 * What sysext-helper manages, in one JSON file written atomically, and the lock
 * that serializes runs. A transaction in progress is recorded in `pending`
 * before the host is touched, so a run killed at any step can be undone by the
 * next one.
 */
import {closeSync, linkSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {HelperError, fsError} from '../errors.js'
import {writeFileAtomic} from '../fs-atomic.js'
import {checkState} from './state-schema.js'

export type TargetKind = 'runtime' | 'local' | 'persistent'

export interface Paths {
  stateDir: string
  lockFile: string
  /** Admin policy: which Flatpak apps are approved without an explicit approve. */
  policyFile: string
  targets: Record<TargetKind, string>
}

export const DEFAULT_PATHS: Paths = {
  stateDir: '/var/lib/sysext-helper',
  lockFile: '/run/sysext-helper.lock',
  policyFile: '/etc/sysext-helper/policy.conf',
  // systemd-sysext search order: an earlier directory wins on a name clash.
  targets: {persistent: '/etc/extensions', runtime: '/run/extensions', local: '/var/lib/extensions'},
}

export interface ExtensionSource {
  kind: 'path' | 'flatpak'
  /** The tree as given (for Flatpak: the stable current/active path). */
  path: string
  appId?: string
  installation?: string
  commit?: string
}

export interface ManagedExtension {
  name: string
  source: ExtensionSource
  target: TargetKind
  /** TARGET/NAME. */
  link: string
  /** What the link points to: the source tree, or a stage under stateDir. */
  linkTarget: string
  /** Set when linkTarget is a staged copy owned by sysext-helper. */
  stage?: string
  releaseGenerated: boolean
  hash: string
  installedAt: string
  busNames: Array<{name: string; unit?: string}>
  units: string[]
  polkitActions: string[]
  touchesPolkit: boolean
  /** Release EXTENSION_RELOAD_MANAGER=1 (systemd >= 255 reloads itself). */
  reloadManager: boolean
  /** Extras the admin granted this extension (install --allow); updates are held to them. */
  allow?: string[]
  /** What was merged, as installed: drift is a difference from this. */
  manifest?: Manifest
  /** /proc/sys/kernel/random/boot_id at install: a runtime record from another boot is gone. */
  bootId?: string
  /** Install enabled systemd-sysext.service for this (local/persistent) extension. */
  enableBoot?: boolean
}

/** Per entry [path, type, mode, uid, size, mtimeMs, ctimeMs, ino] of usr/ and opt/, plus the content hash of it all. */
export interface Manifest {
  hash: string
  entries: ManifestEntry[]
}
export type ManifestEntry = [string, string, number, number, number, number, number, number]

/** Recorded before the host is changed; removed when the change is complete or undone. */
export interface PendingChange {
  name: string
  op: 'install' | 'uninstall'
  /** Every link path this change touches, with its target before the change (null: absent). */
  restore: Array<{link: string; target: string | null}>
  /** A stage created by this change, to delete when undoing it. */
  newStage?: string
  /** Units the change may have started or must stop (stopped when it is recovered). */
  units?: string[]
  startedAt: string
  pid: number
}

/** An admin's consent to merge a Flatpak app's extension (given by install or approve). */
export interface Approval {
  appId: string
  approvedAt: string
  /** Extras granted with the approval (approve/install --allow); sync holds every update to them. */
  allow?: string[]
}

export interface State {
  version: 1
  extensions: Record<string, ManagedExtension>
  pending: Record<string, PendingChange>
  approvals: Record<string, Approval>
}

/** The extras recorded for an extension name or app id: its managed record's, else its approval's. */
export function grantedExtras(state: State, key: string): string[] | undefined {
  return state.extensions[key]?.allow ?? state.approvals[key]?.allow
}

export function emptyState(): State {
  return {version: 1, extensions: {}, pending: {}, approvals: {}}
}

export function statePath(paths: Paths): string {
  return join(paths.stateDir, 'state.json')
}

export function stageRoot(paths: Paths): string {
  return join(paths.stateDir, 'stage')
}

export function readState(paths: Paths): State {
  const file = statePath(paths)
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return emptyState()
    throw fsError('STATE_UNREADABLE', 'Cannot read state', file, error)
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (error) {
    throw new HelperError('STATE_CORRUPT', `State file '${file}' is not valid JSON.`, {
      file,
      hint: `Move it aside (mv ${file} ${file}.broken) and re-run; installed extensions then show up as foreign and can be re-installed.`,
      cause: error,
    })
  }
  return checkState<State>(parsed, paths, file)
}

export function writeState(paths: Paths, state: State): void {
  const file = statePath(paths)
  try {
    mkdirSync(paths.stateDir, {recursive: true, mode: 0o755})
    writeFileAtomic(file, `${JSON.stringify(state, null, 2)}\n`)
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).code
    throw fsError('STATE_WRITE_FAILED', 'Cannot write state', file, error,
      errno === 'ENOSPC' || errno === 'EDQUOT' ? `Free space on the filesystem holding ${paths.stateDir} (df -h ${paths.stateDir}), then run the command again.`
      : errno === 'EROFS' ? `${paths.stateDir} is on a read-only filesystem: remount it read-write (mount -o remount,rw on its mount point), then run the command again.`
      : `Check that ${paths.stateDir} is a writable directory owned by root, then run the command again.`)
  }
}

/**
 * Leftovers of runs that were killed: temporary state files (.state.json.*.tmp)
 * and unfinished copies (stage/.incoming-*). Only called under the lock, when no
 * other run can be writing them. Returns what was removed.
 */
export function cleanLeftovers(paths: Paths): string[] {
  const removed: string[] = []
  const sweep = (dir: string, match: (name: string) => boolean): void => {
    let names: string[]
    try {
      names = readdirSync(dir)
    } catch {
      return
    }
    for (const name of names)
      if (match(name)) {
        rmSync(join(dir, name), {recursive: true, force: true})
        removed.push(join(dir, name))
      }
  }
  sweep(paths.stateDir, (n) => n.startsWith('.state.json.') && n.endsWith('.tmp'))
  sweep(stageRoot(paths), (n) => n.startsWith('.incoming-'))
  return removed
}

/** Start time of a process in clock ticks since boot, to tell a live lock holder from a reused PID. */
function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

export interface Lock {
  release(): void
}

/**
 * Takes the run lock (O_EXCL file holding "PID STARTTIME"). A lock left by a
 * dead process is taken over. Waits up to `timeoutMs`, calling `onWait` once.
 */
export async function acquireLock(paths: Paths, timeoutMs: number, onWait?: (holder: number) => void): Promise<Lock> {
  mkdirSync(dirname(paths.lockFile), {recursive: true})
  const me = `${process.pid} ${processStart(process.pid) ?? ''}\n`
  const deadline = Date.now() + timeoutMs
  let told = false
  for (;;) {
    // Written first, then hard-linked into place: the lock file never exists without its content.
    const mine = `${paths.lockFile}.${process.pid}`
    try {
      const fd = openSync(mine, 'w', 0o644)
      writeSync(fd, me)
      closeSync(fd)
      linkSync(mine, paths.lockFile)
      return {release: () => rmSync(paths.lockFile, {force: true})}
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError('LOCK_FAILED', 'Cannot create lock', paths.lockFile, error)
    } finally {
      rmSync(mine, {force: true})
    }
    let content: string
    try {
      content = readFileSync(paths.lockFile, 'utf8')
    } catch {
      continue // released between our open and read
    }
    const [pid, holderStart] = content.trim().split(' ')
    const holder = Number(pid)
    const alive = Number.isInteger(holder) && holder > 0 && processStart(holder) !== undefined && processStart(holder) === holderStart
    if (!alive) {
      // Take a dead holder's lock over by renaming it away: of several runs doing this at
      // once only one rename succeeds, and a fresh lock renamed by mistake is put back.
      const aside = `${paths.lockFile}.stale.${process.pid}`
      try {
        renameSync(paths.lockFile, aside)
      } catch {
        continue
      }
      if (readFileSync(aside, 'utf8') !== content) {
        try {
          linkSync(aside, paths.lockFile)
        } catch {
          // someone took the lock meanwhile; theirs stands
        }
      }
      rmSync(aside, {force: true})
      continue
    }
    if (Date.now() > deadline)
      throw new HelperError('LOCKED', `Another sysext-helper run (pid ${holder}) holds ${paths.lockFile}.`, {
        hint: 'Wait for it to finish, then run this again.',
      })
    if (!told) onWait?.(holder)
    told = true
    await new Promise((r) => setTimeout(r, 100))
  }
}
