/**
 * The package a user installs from the registry: packed from a clean copy (prepack
 * builds it), installed with `npm install -g` into a scratch prefix, run from
 * outside the clone. It must install without a warning and work with no
 * node_modules of ours around.
 */
import assert from 'node:assert/strict'
import {execFileSync, spawnSync} from 'node:child_process'
import {mkdtempSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {before, describe, test} from 'node:test'
import {DEBIAN_12, makeHostRoot, makeTree} from '../lib/fixtures.js'
import {installGlobally, packedTarball} from '../lib/package.js'

describe('the npm package', () => {
  let prefix: string
  let npmOutput: string
  let tarball: string
  const cli = (args: string[]) => spawnSync(join(prefix, 'bin', 'sysext-helper'), args, {cwd: '/', encoding: 'utf8', env: {PATH: '/usr/bin:/bin', HOME: tmpdir()}})
  before(() => {
    tarball = packedTarball()
    prefix = mkdtempSync(join(tmpdir(), 'sysext-prefix-'))
    npmOutput = installGlobally(tarball, prefix)
  })

  test('ships only what runs: the bundles, templates and release template, no tests, sources or scripts', () => {
    const files = execFileSync('tar', ['-tzf', tarball], {encoding: 'utf8'}).trim().split('\n').map((f) => f.replace(/^package\//, '')).sort()
    assert.ok(files.includes('dist/bundle/cli.js') && files.includes('dist/bundle/commands.js') && files.includes('dist/bundle/uwrap.node'), files.join(' '))
    assert.ok(files.includes('bin/sysext-helper.js'))
    assert.deepEqual(files.filter((f) => /^(test|bench|scripts|src)\//.test(f) || f.startsWith('dist/src/') || f.endsWith('.map')), [])
  })

  test('installs with no warning and nothing to build (no dependencies, no install scripts); npm ls is clean', () => {
    assert.doesNotMatch(npmOutput, /warn/i, npmOutput)
    assert.match(npmOutput, /added 1 package/)
    const ls = spawnSync('npm', ['ls', '-g', '--prefix', prefix], {encoding: 'utf8'})
    assert.equal(ls.status, 0, ls.stdout + ls.stderr)
  })

  test('--help lists the commands; rules and validate run from outside the clone', () => {
    const help = cli(['--help'])
    assert.equal(help.status, 0, help.stderr)
    for (const command of ['validate', 'install', 'self-install', 'capture', 'rules']) assert.match(help.stdout, new RegExp(`^ {2}${command} `, 'm'))
    const rules = cli(['rules', '--json'])
    assert.equal(rules.status, 0, rules.stderr)
    assert.ok(JSON.parse(rules.stdout).rules.some((r: {rule: string}) => r.rule === 'confine-path'))
    const name = 'org.example.App'
    const tree = makeTree({[`usr/lib/extension-release.d/extension-release.${name}`]: 'ID=_any\n', [`usr/share/${name}/data`]: 'x'})
    const v = cli(['validate', tree, '--host-root', makeHostRoot(DEBIAN_12), '--json'])
    assert.equal(v.status, 0, v.stderr + v.stdout)
    assert.equal(JSON.parse(v.stdout).ok, true)
  })

  test('self-install --dry-run plans a tree assembled from the package and the running node (no build step)', () => {
    const r = cli(['self-install', '--dry-run', '--target', 'runtime', '--json'])
    assert.equal(r.status, 0, r.stderr + r.stdout)
    const plan = JSON.parse(r.stdout)
    assert.equal(plan.name, 'sysext-helper')
    assert.match(plan.source.path, /sysext-helper-self-.*\/tree$/)
    assert.deepEqual(plan.declarations.busNames.map((b: {name: string}) => b.name), ['io.github.sysext_helper.Manager1', 'io.github.sysext_helper.Monitor1'])
    assert.doesNotMatch(r.stderr, /build:extension|npm run/)
  })
})
