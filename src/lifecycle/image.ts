/**
 * sysext-helper as a system extension of its own: where its extension tree is
 * when the CLI runs from one, and packing a tree into a `.raw` image
 * (squashfs or erofs) for hosts that prefer images.
 */
import {existsSync, realpathSync, statSync} from 'node:fs'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'
import {HelperError} from '../errors.js'
import {run} from '../exec.js'
import {type Paths, DEFAULT_PATHS, readState} from './state.js'

/** The image name of the helper extension (and of its release file). */
export const SELF_NAME = 'sysext-helper'
/** The extras sysext-helper's own extension needs: usr/bin/sysext-helper, the sync .path unit (enabled), the Flatpak trigger. */
export const SELF_EXTRAS = ['commands', 'boot-units', 'flatpak-triggers']
/** Where the runtime and the bundles live inside the extension tree. */
export const SELF_LIB_DIR = 'usr/lib/sysext-helper'
export const SELF_RELEASE = `usr/lib/extension-release.d/extension-release.${SELF_NAME}`

export type SelfLocation =
  /** The CLI runs from an unmerged extension tree (e.g. /srv/ext/usr/lib/sysext-helper). */
  | {kind: 'tree'; root: string}
  /** The CLI runs from the merged /usr: the tree is the installed image's source, if known. */
  | {kind: 'merged'}
  /** The CLI runs from a checkout (dist/src/...): the tree is its build output. */
  | {kind: 'checkout'; repo: string; root: string}
  /** The CLI runs from an installed npm package's bundles (ROOT/dist/bundle): the tree is assembled from them. */
  | {kind: 'package'; root: string; bundle: string}

/**
 * Where the extension the running CLI belongs to is, judged from the location of
 * the running module (`import.meta.url` of this file: inside the bundle in an
 * extension tree, under dist/src/ in a checkout). `exists` is injectable for tests.
 */
export function locateSelf(moduleFile: string, exists: (path: string) => boolean = existsSync): SelfLocation | undefined {
  let dir = dirname(moduleFile)
  for (;;) {
    // In a tree, the bundle sits in ROOT/usr/lib/sysext-helper next to ROOT's release file.
    if (dir.endsWith(`/${SELF_LIB_DIR}`)) {
      const root = dir.slice(0, -SELF_LIB_DIR.length - 1) || '/'
      if (exists(join(root, SELF_RELEASE))) return root === '/' ? {kind: 'merged'} : {kind: 'tree', root}
    }
    // An npm package ships the bundles in dist/bundle, with templates/ and extension-release.d/ beside dist/.
    if (dir.endsWith('/dist/bundle') && exists(join(dir, 'cli.js'))) {
      const root = dirname(dirname(dir))
      if (exists(join(root, 'templates')) && exists(join(root, 'extension-release.d', `extension-release.${SELF_NAME}`))) return {kind: 'package', root, bundle: dir}
    }
    if (exists(join(dir, 'package.json')) && exists(join(dir, 'bin', 'run.js')))
      return {kind: 'checkout', repo: dir, root: join(dir, 'dist', 'extension')}
    const up = dirname(dir)
    if (up === dir) return undefined
    dir = up
  }
}

/**
 * The tree `self-install` installs. From the merged /usr that is the tree the
 * managed record says the link points at (re-installing is then a no-op or a repair).
 */
export function selfExtensionTree(moduleUrl: string, paths: Paths = DEFAULT_PATHS): string {
  let file = fileURLToPath(moduleUrl)
  try {
    file = realpathSync(file)
  } catch {}
  return treeForLocation(locateSelf(file), file, paths)
}

/** The tree to install for a location found by locateSelf (`file`: the module, for messages). */
export function treeForLocation(where: SelfLocation | undefined, file: string, paths: Paths = DEFAULT_PATHS): string {
  if (!where)
    throw new HelperError('SELF_TREE_NOT_FOUND', `Cannot tell which extension tree '${file}' belongs to.`, {
      hint: `Install a tree explicitly: sysext-helper install PATH --name ${SELF_NAME}`,
    })
  if (where.kind === 'tree') return where.root
  if (where.kind === 'package')
    throw new HelperError('SELF_TREE_NOT_ASSEMBLED', `'${file}' runs from the package's bundles in ${where.bundle}; its extension tree is assembled by self-install.`, {
      hint: 'Run sysext-helper self-install.',
    })
  if (where.kind === 'checkout') {
    if (!isDirectory(join(where.root, 'usr')))
      throw new HelperError('SELF_TREE_NOT_BUILT', `The helper extension has not been built: '${where.root}' is missing.`, {
        file: where.root,
        hint: `Build it first: (cd ${where.repo} && npm run build:extension)`,
      })
    return where.root
  }
  const record = readState(paths).extensions[SELF_NAME]
  if (!record)
    throw new HelperError('SELF_TREE_UNKNOWN', `${SELF_NAME} runs from the merged /usr, but no '${SELF_NAME}' extension is recorded in ${paths.stateDir}/state.json.`, {
      hint: `Install it from its extension tree: /path/to/tree/${SELF_LIB_DIR}/node /path/to/tree/${SELF_LIB_DIR}/cli.js self-install`,
    })
  return record.source.path
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory()
  } catch {
    return false
  }
}

// ---------------------------------------------------------------------------
// Images

export type ImageFormat = 'squashfs' | 'erofs'

export interface ImageResult {
  path: string
  format: ImageFormat
  bytes: number
  command: string
}

/** The command line that packs `tree` into `output` (root-owned entries, output replaced). */
export function imageCommand(format: ImageFormat, tree: string, output: string): {file: string; args: string[]} {
  if (format === 'squashfs') return {file: 'mksquashfs', args: [tree, output, '-all-root', '-noappend', '-quiet', '-no-progress']}
  // mkfs.erofs overwrites the output; --all-root as mksquashfs' -all-root; -T0 for reproducible timestamps.
  return {file: 'mkfs.erofs', args: ['--all-root', '-T0', output, tree]}
}

const PACKAGES: Record<ImageFormat, string> = {squashfs: 'squashfs-tools', erofs: 'erofs-utils'}

/** Packs an extension tree into a `.raw` image systemd-sysext can merge. */
export async function packImage(tree: string, output: string, format: ImageFormat = 'squashfs'): Promise<ImageResult> {
  if (!isDirectory(join(tree, 'usr')))
    throw new HelperError('TREE_NOT_FOUND', `'${tree}' is not an extension tree (no usr/ directory).`, {file: tree})
  const out = resolve(output)
  const {file, args} = imageCommand(format, resolve(tree), out)
  let result
  try {
    result = await run(file, args, {timeoutMs: 600_000})
  } catch (error) {
    if (error instanceof HelperError && error.code === 'EXEC_NOT_FOUND')
      throw new HelperError('IMAGE_TOOL_MISSING', `${file} is not installed: cannot pack the ${format} image.`, {
        hint: `apt-get install ${PACKAGES[format]}${format === 'erofs' ? ', or pack squashfs instead' : ''}`,
        cause: error,
      })
    throw new HelperError('IMAGE_FAILED', `Packing '${tree}' into '${out}' failed: ${(error as Error).message}`, {file: out, cause: error})
  }
  return {path: out, format, bytes: statSync(out).size, command: result.command}
}
