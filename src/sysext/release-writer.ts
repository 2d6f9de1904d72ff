/**
 * `release`: decide the fields of an extension-release file (pure) and write it
 * into a tree or a staged copy (atomic).
 */
import {existsSync, mkdirSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {HelperError, fsError, usageError} from '../errors.js'
import type {Host} from './host.js'
import {SYSTEMD_ARCHITECTURES} from './host.js'
import {renderRelease} from '../formats/os-release.js'
import {releasePath} from './release.js'
import {writeFileAtomic} from '../fs-atomic.js'
import {copyTree, stageHint} from './tree-copy.js'
import {type Tree, childrenOf} from './tree.js'

export interface ReleaseOptions {
  name: string
  id?: string
  versionId?: string
  sysextLevel?: string
  architecture?: string
  /** true/false to force, undefined = when the tree ships systemd units. */
  reloadManager?: boolean
  scope?: string
}

export interface ReleasePlan {
  name: string
  /** Tree-relative path of the release file. */
  file: string
  fields: Array<[string, string]>
  content: string
}

export function treeHasUnits(tree: Tree): boolean {
  return childrenOf(tree, 'usr/lib/systemd/system').some((e) => e.type === 'file' || e.type === 'symlink')
}

/** Pure: the release file for `tree` on (or for) `host`. */
export function planRelease(tree: Tree, host: Pick<Host, 'architecture' | 'osRelease'>, options: ReleaseOptions): ReleasePlan {
  const id = options.id ?? '_any'
  if (options.versionId !== undefined && options.sysextLevel !== undefined)
    throw usageError('RELEASE_CONFLICTING_VERSION', '--version-id and --sysext-level exclude each other.', 'Pass one: SYSEXT_LEVEL for hosts that declare it, else VERSION_ID.')
  const architecture = options.architecture ?? host.architecture
  if (architecture !== '_any' && !SYSTEMD_ARCHITECTURES.includes(architecture))
    throw usageError('RELEASE_BAD_ARCHITECTURE', `'${architecture}' is not an architecture name systemd knows.`, `Use one of: _any, ${SYSTEMD_ARCHITECTURES.join(', ')}.`)
  if (options.scope !== undefined && !options.scope.split(/\s+/).includes('system'))
    throw usageError('RELEASE_BAD_SCOPE', `--scope '${options.scope}' lacks 'system'; systemd-sysext would ignore the extension on a booted host.`, "Include 'system' (e.g. --scope 'system portable').")

  const fields: Array<[string, string]> = [['ID', id]]
  if (id !== '_any') {
    if (options.sysextLevel !== undefined) fields.push(['SYSEXT_LEVEL', options.sysextLevel])
    else if (options.versionId !== undefined) fields.push(['VERSION_ID', options.versionId])
    else if (host.osRelease.ID === id && host.osRelease.VERSION_ID) fields.push(['VERSION_ID', host.osRelease.VERSION_ID])
    else if (host.osRelease.ID !== id)
      throw usageError('RELEASE_NEEDS_VERSION', `ID=${id} is not this host's ID, so its version is unknown.`, 'Pass --version-id or --sysext-level, or use --id _any.')
  } else if (options.versionId !== undefined || options.sysextLevel !== undefined) {
    throw usageError('RELEASE_VERSION_WITH_ANY', 'ID=_any matches every host; systemd ignores VERSION_ID and SYSEXT_LEVEL with it.', 'Drop --version-id/--sysext-level, or pass --id.')
  }
  fields.push(['ARCHITECTURE', architecture])
  if (options.scope !== undefined) fields.push(['SYSEXT_SCOPE', options.scope])
  if (options.reloadManager ?? treeHasUnits(tree)) fields.push(['EXTENSION_RELOAD_MANAGER', '1'])
  return {name: options.name, file: releasePath(options.name), fields, content: renderRelease(fields)}
}

/**
 * A Flatpak deploy directory holds `deploy` and `metadata` next to `files/`;
 * writing into one corrupts the ostree checkout and is lost on the next update.
 */
export function flatpakDeployOf(path: string): string | undefined {
  for (let dir = path; dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, 'deploy')) && existsSync(join(dir, 'metadata')) && existsSync(join(dir, 'files'))) return dir
  }
  return undefined
}

export interface WriteResult {
  /** Absolute path of the release file written. */
  path: string
  /** The tree the file was written into (the --output copy when given). */
  tree: string
  staged?: {linked: number; copied: number}
  plan: ReleasePlan
}

export function writeRelease(tree: Tree, plan: ReleasePlan): WriteResult {
  const deploy = flatpakDeployOf(tree.root)
  if (deploy)
    throw new HelperError('RELEASE_INTO_DEPLOY', `'${tree.root}' is inside the Flatpak deploy ${deploy}; it must never be written to.`, {
      hint: "Write a staged copy with --output DIR, or let 'sysext-helper install' stage one.",
    })
  return writeReleaseAt(tree.root, plan)
}

/** The release file in a tree sysext-helper itself created (a stage or an --output copy). */
export function writeReleaseAt(root: string, plan: ReleasePlan, staged?: WriteResult['staged']): WriteResult {
  const path = join(root, plan.file)
  try {
    mkdirSync(dirname(path), {recursive: true, mode: 0o755})
    writeFileAtomic(path, plan.content)
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).code
    throw fsError('RELEASE_WRITE_FAILED', 'Cannot write release file', path, error,
      errno === 'ENOSPC' || errno === 'EROFS' ? stageHint(errno, path) : 'The tree may be read-only; write a staged copy with --output DIR.')
  }
  return {path, tree: root, staged, plan}
}

/** `release --output DIR`: the same copy install stages (see tree-copy), plus the release file. */
export async function writeReleaseCopy(tree: Tree, plan: ReleasePlan, output: string): Promise<WriteResult> {
  if (existsSync(output))
    throw usageError('OUTPUT_EXISTS', `--output '${output}' already exists.`, 'Pass a directory that does not exist yet; it is created with the staged copy.')
  const {linked, copied} = await copyTree(tree.root, output, undefined, {hardLinks: true})
  return writeReleaseAt(output, plan, {linked, copied})
}
