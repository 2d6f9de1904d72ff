/**
 * Builds sysext-helper's bundles and its self-contained system extension tree.
 *
 *   dist/bundle/    cli.js (runs oclif on commands.js), commands.js (esbuild bundle of every
 *                   command, exports COMMANDS), helper.js (the helper service), uwrap.node
 *                   (usocket's prebuilt addon, loaded by the bundles), package.json (oclif
 *                   config: explicit command discovery), oclif.manifest.json. The npm package
 *                   ships this directory (no runtime dependencies to install).
 *   --out DIR       the extension tree assembled from the bundles, this machine's node,
 *                   templates/ and extension-release.d/ (src/lifecycle/self-tree.ts).
 *
 * Usage (after `npm run build`, which compiles this file):
 *   node dist/scripts/build-extension.js [--bundle-only] [--out DIR] [--image] [--image-format squashfs|erofs] [--image-output FILE]
 * Default --out: dist/extension; default image: sysext-helper.raw next to the tree.
 */
import {spawnSync} from 'node:child_process'
import {chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmSync, statSync} from 'node:fs'
import {dirname, join, relative, resolve} from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'
import {parseArgs} from 'node:util'
import {type Plugin, build} from 'esbuild'
import {HelperError} from '../src/errors.js'
import {type ImageFormat, type ImageResult, SELF_LIB_DIR, SELF_NAME, SELF_RELEASE, packImage} from '../src/lifecycle/image.js'
import {assembleSelfTree, writeFileMode} from '../src/lifecycle/self-tree.js'

/** The checkout (this file runs from dist/scripts/). */
export const REPO = resolve(fileURLToPath(new URL('../../', import.meta.url)))

/** Entry modules of the helper service, first found wins (compiled under dist/src/helper/). */
const HELPER_ENTRIES = ['daemon', 'main', 'service', 'server', 'index']

export interface BuildOptions {
  repo?: string
  out?: string
  image?: boolean
  imageFormat?: ImageFormat
  imageOutput?: string
  log?: (line: string) => void
}

export interface BuildResult {
  out: string
  architecture: string
  commands: string[]
  helper?: string
  templates: string[]
  files: number
  bytes: number
  image?: ImageResult
}

/** oclif command ids from the compiled command files (nested dirs become topics: a/b.js -> a:b). */
export function commandIds(commandsDir: string): Array<{id: string; file: string}> {
  const found: Array<{id: string; file: string}> = []
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, {withFileTypes: true}).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const abs = join(dir, e.name)
      if (e.isDirectory()) walk(abs)
      else if (e.isFile() && e.name.endsWith('.js')) {
        const id = relative(commandsDir, abs).slice(0, -3).split('/').filter((p, i, all) => !(p === 'index' && i === all.length - 1)).join(':')
        found.push({id, file: abs})
      }
    }
  }
  walk(commandsDir)
  return found
}

/**
 * usocket loads its addon with `require('bindings')('uwrap')`, which searches
 * node_modules: the bundles load uwrap.node from their own directory instead.
 */
function usocketAddon(): Plugin {
  return {
    name: 'usocket-addon',
    setup(b) {
      b.onLoad({filter: /[\\/]usocket[\\/]index\.js$/}, (args) => {
        const text = readFileSync(args.path, 'utf8')
        const patched = text.replace(/require\((['"])bindings\1\)\(\s*(['"])uwrap\2\s*\)/, "require('./uwrap.node')")
        if (patched === text) throw new Error(`${args.path}: the require('bindings')('uwrap') call to patch was not found (usocket changed?)`)
        return {contents: patched, loader: 'js'}
      })
      b.onResolve({filter: /^\.\/uwrap\.node$/}, () => ({path: './uwrap.node', external: true}))
    },
  }
}

/** ESM output holding CommonJS code (oclif, dbus-next) needs require and __dirname. */
const BANNER = [
  "import {createRequire as __sxhCreateRequire} from 'node:module';",
  "import {fileURLToPath as __sxhFileURLToPath} from 'node:url';",
  "import {dirname as __sxhDirname} from 'node:path';",
  'const require = __sxhCreateRequire(import.meta.url);',
  'const __filename = __sxhFileURLToPath(import.meta.url);',
  'const __dirname = __sxhDirname(__filename);',
].join('\n')

async function bundle(repo: string, entry: {contents: string} | {file: string}, outfile: string): Promise<void> {
  const common = {
    bundle: true,
    platform: 'node' as const,
    format: 'esm' as const,
    target: 'node20',
    outfile,
    banner: {js: BANNER},
    plugins: [usocketAddon()],
    keepNames: true,
    legalComments: 'none' as const,
    logLevel: 'error' as const,
    // Optional peers that the bundled code probes for inside try/catch.
    // x11: dbus-next's optional X11 session-bus autolaunch, never used on the system bus.
    external: ['ts-node', 'typescript', 'x11'],
    absWorkingDir: repo,
  }
  if ('file' in entry) await build({...common, entryPoints: [entry.file]})
  else await build({...common, stdin: {contents: entry.contents, resolveDir: repo, sourcefile: 'commands-entry.js', loader: 'js'}})
}

/** Refuses to delete anything that is not a previous build (or empty). */
function clearOut(out: string): void {
  if (!existsSync(out)) return
  const entries = readdirSync(out)
  if (entries.length > 0 && !existsSync(join(out, SELF_RELEASE)) && !existsSync(join(out, SELF_LIB_DIR)))
    throw new HelperError('BUILD_OUT_NOT_EMPTY', `'${out}' is not empty and is not a previous sysext-helper extension build; not deleting it.`, {
      hint: 'Pick an empty or new directory for --out.',
    })
  rmSync(out, {recursive: true, force: true})
}

/** Builds the bundles into `bundleDir` (replaced): the CLI, the helper service, the addon, the oclif config and manifest. */
export async function buildBundle(repo: string, bundleDir: string, log: (line: string) => void): Promise<{commands: string[]; helper?: string}> {
  const compiled = join(repo, 'dist', 'src')
  if (!existsSync(join(compiled, 'commands')))
    throw new HelperError('BUILD_NOT_COMPILED', `'${compiled}/commands' is missing.`, {hint: 'Run npm run build first (npm run build:extension does).'})
  const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as {name: string; version: string; oclif: Record<string, unknown>}
  rmSync(bundleDir, {recursive: true, force: true})
  mkdirSync(bundleDir, {recursive: true, mode: 0o755})

  // The CLI: one bundle exporting every command class, and a tiny entry running oclif on it.
  const commands = commandIds(join(compiled, 'commands'))
  const entry = [
    "import {execute} from '@oclif/core'",
    ...commands.map((c, i) => `import C${i} from ${JSON.stringify(c.file)}`),
    `export const COMMANDS = {${commands.map((c, i) => `${JSON.stringify(c.id)}: C${i}`).join(', ')}}`,
    'export function main(dir) { return execute({dir}) }',
    '',
  ].join('\n')
  await bundle(repo, {contents: entry}, join(bundleDir, 'commands.js'))
  writeFileMode(join(bundleDir, 'cli.js'), "import {main} from './commands.js'\n\nawait main(import.meta.url)\n", 0o644)
  log(`bundled ${commands.length} commands: ${commands.map((c) => c.id).join(', ')}`)

  // The helper service, when src/helper has a daemon entry.
  const helperEntry = HELPER_ENTRIES.map((n) => join(compiled, 'helper', `${n}.js`)).find((f) => existsSync(f))
  if (helperEntry) {
    await bundle(repo, {file: helperEntry}, join(bundleDir, 'helper.js'))
    // Run as `node helper.js` by its unit; esbuild marks a bundle with a #! line executable, and
    // an executable whose interpreter (env node) the host lacks is exactly what validate refuses.
    chmodSync(join(bundleDir, 'helper.js'), 0o644)
    log(`bundled the helper service from ${relative(repo, helperEntry)}`)
  } else log(`no helper service entry (dist/src/helper/{${HELPER_ENTRIES.join(',')}}.js): helper.js not built`)

  // The install service (Manager1): run as `node manager.js` by its unit, like helper.js.
  const managerEntry = join(compiled, 'helper', 'manager-main.js')
  if (existsSync(managerEntry)) {
    await bundle(repo, {file: managerEntry}, join(bundleDir, 'manager.js'))
    chmodSync(join(bundleDir, 'manager.js'), 0o644)
    log(`bundled the install service from ${relative(repo, managerEntry)}`)
  }

  // oclif reads its config from the package.json next to the entry.
  const oclifConfig = {...pkg.oclif, commands: {strategy: 'explicit', target: './commands.js', identifier: 'COMMANDS'}}
  writeFileMode(join(bundleDir, 'package.json'), `${JSON.stringify({name: pkg.name, version: pkg.version, private: true, type: 'module', files: ['cli.js', 'commands.js', 'oclif.manifest.json'], oclif: oclifConfig}, null, 2)}\n`, 0o644)

  const addon = join(repo, 'node_modules', 'usocket', 'build', 'Release', 'uwrap.node')
  if (!existsSync(addon))
    throw new HelperError('BUILD_ADDON_MISSING', `'${addon}' is missing: usocket was not built.`, {hint: 'npm rebuild usocket (its install script must be approved: allowScripts in package.json).'})
  copyFileSync(addon, join(bundleDir, 'uwrap.node'))
  chmodSync(join(bundleDir, 'uwrap.node'), 0o644)

  // The manifest lets oclif list commands and flags without loading them.
  const oclifBin = join(repo, 'node_modules', 'oclif', 'bin', 'run.js')
  const manifest = spawnSync(process.execPath, [oclifBin, 'manifest', bundleDir], {encoding: 'utf8', cwd: bundleDir, env: {...process.env, OCLIF_SKIP_NEW_VERSION_CHECK: 'true'}})
  if (manifest.status !== 0 || !existsSync(join(bundleDir, 'oclif.manifest.json')))
    throw new HelperError('BUILD_MANIFEST_FAILED', `oclif manifest failed for '${bundleDir}': ${(manifest.stderr || manifest.stdout || '').trim().split('\n').slice(-3).join(' ')}`)
  return {commands: commands.map((c) => c.id), helper: helperEntry ? relative(repo, helperEntry) : undefined}
}

export async function buildExtension(options: BuildOptions = {}): Promise<BuildResult> {
  const repo = options.repo ?? REPO
  const out = resolve(options.out ?? join(repo, 'dist', 'extension'))
  const log = options.log ?? (() => {})
  const bundleDir = join(repo, 'dist', 'bundle')
  const {commands, helper} = await buildBundle(repo, bundleDir, log)
  clearOut(out)
  const assembled = assembleSelfTree({bundle: bundleDir, packageRoot: repo, node: realpathSync(process.execPath)}, out)
  const lib = join(out, SELF_LIB_DIR)

  // The bundle must run on its own: nothing from node_modules may be left to resolve at run time.
  const smoke = spawnSync(join(lib, 'node'), [join(lib, 'cli.js'), '--version'], {encoding: 'utf8', cwd: '/', env: {PATH: '/usr/bin:/bin'}})
  if (smoke.status !== 0)
    throw new HelperError('BUILD_BUNDLE_BROKEN', `The bundled CLI does not run: ${(smoke.stderr || smoke.stdout).trim().split('\n').slice(0, 3).join(' ')}`, {hint: 'Rerun with DEBUG=1; a module esbuild left external is the usual cause.'})
  log(`copied ${assembled.templates.length} template files`)

  const result: BuildResult = {out, architecture: assembled.architecture, commands, templates: assembled.templates, files: assembled.files, bytes: assembled.bytes}
  if (helper) result.helper = helper
  log(`${out}: ${assembled.files} files, ${(assembled.bytes / 1048576).toFixed(1)} MiB (node ${(statSync(join(lib, 'node')).size / 1048576).toFixed(1)} MiB, commands.js ${(statSync(join(lib, 'commands.js')).size / 1048576).toFixed(1)} MiB), ARCHITECTURE=${assembled.architecture}`)

  if (options.image) {
    const output = resolve(options.imageOutput ?? join(dirname(out), `${SELF_NAME}.raw`))
    result.image = await packImage(out, output, options.imageFormat ?? 'squashfs')
    log(`${result.image.path}: ${result.image.format}, ${(result.image.bytes / 1048576).toFixed(1)} MiB`)
  }
  return result
}

async function main(): Promise<void> {
  const {values} = parseArgs({
    options: {
      out: {type: 'string'},
      image: {type: 'boolean', default: false},
      'image-format': {type: 'string', default: 'squashfs'},
      'image-output': {type: 'string'},
      'bundle-only': {type: 'boolean', default: false},
      json: {type: 'boolean', default: false},
    },
  })
  const log = values.json ? undefined : (line: string) => process.stderr.write(`${line}\n`)
  if (values['bundle-only']) {
    const result = await buildBundle(REPO, join(REPO, 'dist', 'bundle'), log ?? (() => {}))
    if (values.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
    return
  }
  const format = values['image-format']
  if (format !== 'squashfs' && format !== 'erofs') throw new HelperError('USAGE', `Unknown --image-format '${format}'.`, {hint: 'Use squashfs or erofs.', exit: 2})
  const result = await buildExtension({
    out: values.out,
    image: values.image,
    imageFormat: format,
    imageOutput: values['image-output'],
    log,
  })
  if (values.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
}

if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  main().catch((error: unknown) => {
    const e = error as HelperError
    process.stderr.write(`build-extension: ${e.message ?? String(error)}\n${e.hint ? `Hint: ${e.hint}\n` : ''}`)
    if (process.env.DEBUG) console.error(error)
    process.exitCode = e.exit ?? 1
  })
}
