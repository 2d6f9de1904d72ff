/**
 * Assembling sysext-helper's own extension tree from its prebuilt bundles: at
 * build time (scripts/build-extension.ts, after esbuild) and at `self-install`
 * time from an npm-installed package, which ships the bundles but no tree. One
 * function for both, so the two trees cannot differ.
 *
 *   usr/bin/sysext-helper                 sh wrapper: exec the bundled node on cli.js
 *   usr/lib/sysext-helper/node            the node binary given (this machine's)
 *   usr/lib/sysext-helper/{cli,commands,helper}.js, uwrap.node, package.json, oclif.manifest.json
 *   usr/lib/extension-release.d/extension-release.sysext-helper
 *   usr/...                               every templates/<component>/usr/** file
 */
import {chmodSync, copyFileSync, existsSync, lchownSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {HelperError, fsError} from '../errors.js'
import {systemdArchitecture} from '../sysext/host.js'
import type {Emit} from './events.js'
import {SELF_EXTRAS, SELF_LIB_DIR, SELF_NAME, SELF_RELEASE, locateSelf, treeForLocation} from './image.js'
import {type InstallOptions, type InstallResult, install} from './install.js'
import {DEFAULT_PATHS, type Paths, type TargetKind, readState} from './state.js'

/** What a bundle directory holds (helper.js only when the helper service was built). */
export const BUNDLE_FILES = ['cli.js', 'commands.js', 'helper.js', 'manager.js', 'uwrap.node', 'package.json', 'oclif.manifest.json']

/**
 * Files to copy from templates/: for every component directory, each entry whose path
 * inside the component starts with usr/, to the same path in the tree. Others are ignored.
 */
export function templateFiles(templatesDir: string): Array<{from: string; to: string}> {
  const out: Array<{from: string; to: string}> = []
  if (!existsSync(templatesDir)) return out
  const walk = (dir: string, rel: string): void => {
    for (const e of readdirSync(dir, {withFileTypes: true}).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const abs = join(dir, e.name)
      const r = rel ? `${rel}/${e.name}` : e.name
      if (e.isDirectory()) walk(abs, r)
      else out.push({from: abs, to: r})
    }
  }
  for (const component of readdirSync(templatesDir, {withFileTypes: true}).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const usr = join(templatesDir, component.name, 'usr')
    if (component.isDirectory() && existsSync(usr) && lstatSync(usr).isDirectory()) walk(usr, 'usr')
  }
  const seen = new Map<string, string>()
  for (const f of out) {
    const other = seen.get(f.to)
    if (other) throw new HelperError('BUILD_TEMPLATE_CLASH', `Both '${other}' and '${f.from}' install ${f.to}.`, {hint: 'Keep one of them.'})
    seen.set(f.to, f.from)
  }
  return out
}

/** The release file: the template with ARCHITECTURE= set to `arch`. */
export function renderSelfRelease(template: string, arch: string): string {
  const lines = template.split('\n')
  const i = lines.findIndex((l) => /^\s*ARCHITECTURE\s*=/.test(l))
  if (i >= 0) lines[i] = `ARCHITECTURE=${arch}`
  else lines.splice(lines[lines.length - 1] === '' ? lines.length - 1 : lines.length, 0, `ARCHITECTURE=${arch}`)
  return lines.join('\n')
}

export function writeFileMode(path: string, content: string | Buffer, mode: number): void {
  mkdirSync(dirname(path), {recursive: true, mode: 0o755})
  writeFileSync(path, content, {mode})
  chmodSync(path, mode)
}

/** 0755 for directories and executables, 0644 otherwise; root-owned when run as root. */
function normalize(out: string): {files: number; bytes: number} {
  const asRoot = process.getuid?.() === 0
  let files = 0
  let bytes = 0
  const walk = (p: string): void => {
    const st = lstatSync(p)
    if (asRoot) lchownSync(p, 0, 0)
    if (st.isSymbolicLink()) return
    if (st.isDirectory()) {
      chmodSync(p, 0o755)
      for (const e of readdirSync(p)) walk(join(p, e))
      return
    }
    chmodSync(p, st.mode & 0o111 ? 0o755 : 0o644)
    files++
    bytes += st.size
  }
  walk(out)
  return {files, bytes}
}

export interface SelfTreeSource {
  /** The directory holding the bundles (BUNDLE_FILES). */
  bundle: string
  /** Where templates/ and extension-release.d/ are (the checkout or the installed package). */
  packageRoot: string
  /** The node binary to ship in the tree. */
  node: string
}

/** Writes the tree into `out` (which must not exist or be empty). Returns its size and the templates copied. */
export function assembleSelfTree(source: SelfTreeSource, out: string): {files: number; bytes: number; templates: string[]; architecture: string} {
  if (!existsSync(join(source.bundle, 'cli.js')) || !existsSync(join(source.bundle, 'commands.js')))
    throw new HelperError('SELF_BUNDLE_MISSING', `'${source.bundle}' holds no sysext-helper bundle (cli.js, commands.js).`, {
      file: source.bundle, hint: 'Reinstall the package, or in a checkout run npm run build:extension.',
    })
  try {
    const lib = join(out, SELF_LIB_DIR)
    mkdirSync(lib, {recursive: true, mode: 0o755})
    for (const name of BUNDLE_FILES) if (existsSync(join(source.bundle, name))) copyFileSync(join(source.bundle, name), join(lib, name))
    copyFileSync(source.node, join(lib, 'node'))
    chmodSync(join(lib, 'node'), 0o755)
    writeFileMode(join(out, 'usr', 'bin', SELF_NAME), `#!/bin/sh\nexec /${SELF_LIB_DIR}/node /${SELF_LIB_DIR}/cli.js "$@"\n`, 0o755)

    // templates/<component>/usr/** -> usr/**, exec bit and symlinks preserved.
    const templates = templateFiles(join(source.packageRoot, 'templates'))
    for (const t of templates) {
      const dest = join(out, t.to)
      if (existsSync(dest)) throw new HelperError('BUILD_TEMPLATE_CLASH', `'${t.from}' would replace ${t.to}, which the build itself writes.`, {hint: 'Move the template elsewhere.'})
      mkdirSync(dirname(dest), {recursive: true, mode: 0o755})
      const st = lstatSync(t.from)
      if (st.isSymbolicLink()) symlinkSync(readlinkSync(t.from), dest)
      else if (st.isFile()) {
        copyFileSync(t.from, dest)
        chmodSync(dest, st.mode & 0o111 ? 0o755 : 0o644)
      } else throw new HelperError('BUILD_TEMPLATE_UNSUPPORTED', `'${t.from}' is not a regular file or symlink.`, {file: t.from})
    }
    const architecture = systemdArchitecture()
    const template = readFileSync(join(source.packageRoot, 'extension-release.d', `extension-release.${SELF_NAME}`), 'utf8')
    writeFileMode(join(out, SELF_RELEASE), renderSelfRelease(template, architecture), 0o644)
    return {...normalize(out), templates: templates.map((t) => t.to), architecture}
  } catch (error) {
    rmSync(out, {recursive: true, force: true})
    if (error instanceof HelperError) throw error
    throw fsError('SELF_TREE_WRITE_FAILED', 'Cannot assemble the sysext-helper extension tree', out, error)
  }
}

export interface SelfInstallSource {
  tree: string
  target: TargetKind
  /** A tree assembled for this run (from an npm package's bundles): remove it when done. */
  assembled?: string
}

/**
 * What `self-install` installs and where: the tree of the running CLI (assembled
 * from the bundles and the running node when it runs from an npm package), into
 * the requested target, else the target it is installed in now, else 'local'.
 */
export function selfInstallSource(moduleUrl: string, requested: TargetKind | undefined, paths: Paths = DEFAULT_PATHS): SelfInstallSource {
  let file = fileURLToPath(moduleUrl)
  try {
    file = realpathSync(file)
  } catch {}
  const where = locateSelf(file)
  const target = requested ?? readState(paths).extensions[SELF_NAME]?.target ?? 'local'
  if (where?.kind !== 'package') return {tree: treeForLocation(where, file, paths), target}
  // A private (0700, root-owned) directory: install stages a copy of it and it is removed afterwards.
  const assembled = mkdtempSync(join(tmpdir(), 'sysext-helper-self-'))
  const tree = join(assembled, 'tree')
  try {
    assembleSelfTree({bundle: where.bundle, packageRoot: where.root, node: realpathSync(process.execPath)}, tree)
  } catch (error) {
    rmSync(assembled, {recursive: true, force: true})
    throw error
  }
  return {tree, target, assembled}
}

/**
 * `self-install`: install the running CLI's own extension under its name, with
 * exactly the extras it needs, always from a staged copy (the tree it runs from
 * may be rebuilt or replaced later).
 */
export async function selfInstall(moduleUrl: string, options: Omit<InstallOptions, 'name' | 'allow' | 'forceStage'> & {requestedTarget?: TargetKind}, emit: Emit): Promise<InstallResult> {
  const {tree, target, assembled} = selfInstallSource(moduleUrl, options.requestedTarget, options.paths)
  try {
    return await install(tree, {...options, name: SELF_NAME, allow: SELF_EXTRAS, targetKind: target, forceStage: true}, emit)
  } finally {
    if (assembled) rmSync(assembled, {recursive: true, force: true})
  }
}
