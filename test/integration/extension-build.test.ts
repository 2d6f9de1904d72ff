/**
 * `npm run build:extension`: the helper extension tree is a valid system extension
 * (the CLI's own validate says so), and the bundled CLI runs from a copy far from
 * any node_modules with nothing but the node binary it ships.
 */
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {cpSync, existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {after, before, describe, test} from 'node:test'
import {systemdArchitecture} from '../../src/sysext/host.js'
import {CLI, REPO_ROOT} from '../lib/fixtures.js'

const BUILD = join(REPO_ROOT, 'dist', 'scripts', 'build-extension.js')
const LIB = 'usr/lib/sysext-helper'

function run(file: string, args: string[], cwd = '/') {
  const r = spawnSync(file, args, {encoding: 'utf8', cwd, env: {PATH: '/usr/sbin:/usr/bin:/sbin:/bin', NO_COLOR: '1', LANG: 'C.UTF-8'}, timeout: 120_000})
  return {code: r.status, stdout: r.stdout, stderr: r.stderr}
}

/** Every file under templates/<component>/usr/, as tree paths. */
function templateFiles(): Array<{from: string; to: string}> {
  const files: Array<{from: string; to: string}> = []
  const walk = (dir: string, rel: string): void => {
    for (const e of readdirSync(dir, {withFileTypes: true})) {
      if (e.isDirectory()) walk(join(dir, e.name), `${rel}/${e.name}`)
      else files.push({from: join(dir, e.name), to: `${rel}/${e.name}`})
    }
  }
  const templates = join(REPO_ROOT, 'templates')
  if (existsSync(templates))
    for (const c of readdirSync(templates)) if (existsSync(join(templates, c, 'usr'))) walk(join(templates, c, 'usr'), 'usr')
  return files
}

describe('build:extension', () => {
  let work: string
  let out: string
  let copy: string
  let build: {out: string; architecture: string; commands: string[]; image: {path: string; format: string; bytes: number}}

  before(() => {
    work = mkdtempSync(join(tmpdir(), 'sysext-ext-build-'))
    out = join(work, 'extension')
    const r = run(process.execPath, [BUILD, '--out', out, '--image', '--image-output', join(work, 'sysext-helper.raw'), '--json'], REPO_ROOT)
    assert.equal(r.code, 0, r.stderr)
    build = JSON.parse(r.stdout)
    // A copy where no node_modules is reachable from any ancestor directory.
    copy = join(mkdtempSync(join(tmpdir(), 'sysext-ext-copy-')), 'tree')
    cpSync(out, copy, {recursive: true, verbatimSymlinks: true})
    for (let d = copy; d !== '/'; d = dirname(d)) assert.equal(existsSync(join(d, 'node_modules')), false, `${d}/node_modules exists`)
  })
  after(() => {
    if (work) rmSync(work, {recursive: true, force: true})
    if (copy) rmSync(dirname(copy), {recursive: true, force: true})
  })

  test('--out builds into the given directory, not dist/extension', () => {
    assert.equal(build.out, out)
    assert.ok(existsSync(join(out, LIB, 'node')))
  })

  test('the CLI validates the tree: no errors, the host would merge it', () => {
    const r = run(process.execPath, [CLI, 'validate', out, '--json', '--allow', 'commands', '--allow', 'boot-units', '--allow', 'flatpak-triggers'])
    assert.equal(r.code, 0, r.stdout + r.stderr)
    const report = JSON.parse(r.stdout)
    assert.equal(report.name, 'sysext-helper')
    // Warnings are the templates' business (e.g. a .path unit enabled on purpose); errors would refuse the install.
    assert.deepEqual(report.findings.filter((f: {severity: string}) => f.severity === 'error'), [])
    assert.equal(report.ok, true)
    // Nothing about the build's own files: the runtime, the bundles, the wrapper, the release file.
    const own = report.findings.filter((f: {file: string}) => f.file.startsWith(`${LIB}/`) || f.file.startsWith('usr/bin/') || f.file.includes('extension-release'))
    assert.deepEqual(own, [])
  })

  test('the release file: ID=_any, ARCHITECTURE of this machine, EXTENSION_RELOAD_MANAGER=1', () => {
    const release = readFileSync(join(out, 'usr/lib/extension-release.d/extension-release.sysext-helper'), 'utf8')
    assert.match(release, /^ID=_any$/m)
    assert.match(release, new RegExp(`^ARCHITECTURE=${systemdArchitecture()}$`, 'm'))
    assert.match(release, /^EXTENSION_RELOAD_MANAGER=1$/m)
    assert.equal(build.architecture, systemdArchitecture())
  })

  test('usr/bin/sysext-helper execs the bundled node on cli.js; modes 0755/0644, nothing group/world-writable', () => {
    assert.equal(readFileSync(join(out, 'usr/bin/sysext-helper'), 'utf8'), `#!/bin/sh\nexec /${LIB}/node /${LIB}/cli.js "$@"\n`)
    const modes: Record<string, number> = {}
    const walk = (rel: string): void => {
      const st = lstatSync(join(out, rel))
      if (!st.isSymbolicLink()) modes[rel] = st.mode & 0o7777
      if (process.getuid?.() === 0) assert.equal(st.uid, 0, `${rel} is root-owned`)
      if (st.isDirectory()) for (const e of readdirSync(join(out, rel))) walk(rel ? `${rel}/${e}` : e)
    }
    walk('')
    for (const [rel, mode] of Object.entries(modes)) assert.ok(mode === 0o755 || mode === 0o644, `${rel}: ${mode.toString(8)}`)
    assert.equal(modes['usr/bin/sysext-helper'], 0o755)
    assert.equal(modes[`${LIB}/node`], 0o755)
    assert.equal(modes[`${LIB}/commands.js`], 0o644)
    assert.equal(modes[`${LIB}/uwrap.node`], 0o644)
  })

  test('every templates/*/usr/** file is in the tree at the same path, exec bit kept', () => {
    for (const t of templateFiles()) {
      const src = lstatSync(t.from)
      const dest = lstatSync(join(out, t.to))
      if (src.isSymbolicLink()) assert.ok(dest.isSymbolicLink(), t.to)
      else {
        assert.deepEqual(readFileSync(join(out, t.to)), readFileSync(t.from), t.to)
        assert.equal((dest.mode & 0o111) !== 0, (src.mode & 0o111) !== 0, `${t.to} exec bit`)
      }
    }
  })

  test('the bundle has its own package.json (explicit command discovery) and manifest, listing every command', () => {
    const pkg = JSON.parse(readFileSync(join(out, LIB, 'package.json'), 'utf8'))
    assert.deepEqual(pkg.oclif.commands, {strategy: 'explicit', target: './commands.js', identifier: 'COMMANDS'})
    const manifest = JSON.parse(readFileSync(join(out, LIB, 'oclif.manifest.json'), 'utf8'))
    const compiled = readdirSync(join(REPO_ROOT, 'dist/src/commands')).filter((f) => f.endsWith('.js')).map((f) => f.slice(0, -3))
    assert.deepEqual(Object.keys(manifest.commands).sort(), compiled.sort())
    assert.deepEqual([...build.commands].sort(), compiled.sort())
  })

  test('the bundled CLI runs from a copy with no node_modules: --version', () => {
    const r = run(join(copy, LIB, 'node'), [join(copy, LIB, 'cli.js'), '--version'])
    assert.equal(r.code, 0, r.stderr)
    const version = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')).version
    assert.match(r.stdout, new RegExp(`^sysext-helper/${version.replace(/\./g, '\\.')} `))
  })

  test('the bundled CLI runs from the copy: rules --json equals the checkout CLI\'s', () => {
    const bundled = run(join(copy, LIB, 'node'), [join(copy, LIB, 'cli.js'), 'rules', '--json'])
    assert.equal(bundled.code, 0, bundled.stderr)
    const dev = run(process.execPath, [CLI, 'rules', '--json'])
    assert.deepEqual(JSON.parse(bundled.stdout), JSON.parse(dev.stdout))
    assert.ok(JSON.parse(bundled.stdout).rules.length > 10)
  })

  test('the bundled CLI validates its own tree, and errors come out as JSON with codes', () => {
    const ok = run(join(copy, LIB, 'node'), [join(copy, LIB, 'cli.js'), 'validate', copy, '--json', '--allow', 'commands', '--allow', 'boot-units', '--allow', 'flatpak-triggers'])
    assert.equal(ok.code, 0, ok.stdout + ok.stderr)
    assert.equal(JSON.parse(ok.stdout).ok, true)
    const missing = run(join(copy, LIB, 'node'), [join(copy, LIB, 'cli.js'), 'validate', '/nonexistent', '--json'])
    assert.equal(missing.code, 1)
    assert.equal(JSON.parse(missing.stdout).error.code, 'TREE_NOT_FOUND')
  })

  test('self-install --dry-run from the copy plans to link the copy itself as sysext-helper', () => {
    const r = run(join(copy, LIB, 'node'), [join(copy, LIB, 'cli.js'), 'self-install', '--dry-run', '--target', 'runtime', '--json'])
    assert.equal(r.code, 0, r.stdout + r.stderr)
    const plan = JSON.parse(r.stdout)
    assert.equal(plan.name, 'sysext-helper')
    assert.equal(plan.source.path, copy)
    assert.equal(plan.link, '/run/extensions/sysext-helper')
  })

  test('export from the bundle writes a tarball tar reads (root-owned, node 0755)', () => {
    const tarball = join(work, 'helper.tar')
    const r = run(join(copy, LIB, 'node'), [join(copy, LIB, 'cli.js'), 'export', copy, '--output', tarball, '--json'])
    assert.equal(r.code, 0, r.stderr)
    const list = run('tar', ['-tvf', tarball, '--numeric-owner'])
    assert.match(list.stdout, /^-rwxr-xr-x 0\/0 .* usr\/lib\/sysext-helper\/node$/m)
    assert.match(list.stdout, /^-rw-r--r-- 0\/0 .* usr\/lib\/extension-release\.d\/extension-release\.sysext-helper$/m)
  })

  test('--image packs the tree as squashfs: root-owned, same files', () => {
    assert.equal(build.image.format, 'squashfs')
    assert.equal(statSync(build.image.path).size, build.image.bytes)
    const r = run('unsquashfs', ['-lln', build.image.path])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /^-rwxr-xr-x 0\/0 .* squashfs-root\/usr\/lib\/sysext-helper\/node$/m)
    assert.match(r.stdout, /^-rwxr-xr-x 0\/0 .* squashfs-root\/usr\/bin\/sysext-helper$/m)
    assert.ok(r.stdout.split('\n').filter(Boolean).every((l) => /^\S+ 0\/0 /.test(l)), r.stdout)
  })
})
