/** The CLI as a user runs it: a subprocess, JSON on stdout, documented exit codes. */
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {existsSync, readFileSync, statSync} from 'node:fs'
import {describe, test} from 'node:test'
import {CLI, DEBIAN_12, makeHostRoot, makeTree} from '../lib/fixtures.js'

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], {encoding: 'utf8', env: {...process.env, NO_COLOR: '1', ...env}})
  return {code: r.status, stdout: r.stdout, stderr: r.stderr}
}

const host = makeHostRoot(DEBIAN_12, {'bin/sh': {content: '', mode: 0o755}})
const NAME = 'org.example.App'
const good = makeTree({
  [`usr/lib/extension-release.d/extension-release.${NAME}`]: 'ID=_any\n',
  'usr/share/org.example.App/data': 'x',
})

describe('validate', () => {
  test('a good tree: exit 0, JSON report with the documented keys', () => {
    const r = cli(['validate', good, '--host-root', host, '--json'])
    assert.equal(r.code, 0, r.stderr)
    const report = JSON.parse(r.stdout)
    assert.deepEqual(Object.keys(report).sort(), ['allowed', 'findings', 'host', 'name', 'ok', 'origin', 'path'])
    assert.equal(report.name, NAME)
    assert.equal(report.ok, true)
    assert.deepEqual(report.findings, [])
    assert.equal(report.host.id, 'debian')
    assert.equal(report.host.versionId, '12')
  })

  test('a tree with errors: exit 1, every finding has rule, severity, file, message, hint', () => {
    const bad = makeTree({'usr/share/x': {content: 'x', mode: 0o666}, 'etc/x.conf': 'y'})
    const r = cli(['validate', bad, '--host-root', host, '--json'])
    assert.equal(r.code, 1)
    const report = JSON.parse(r.stdout)
    assert.equal(report.ok, false)
    assert.equal(report.name, null)
    for (const f of report.findings) assert.deepEqual(Object.keys(f).sort(), ['file', 'hint', 'message', 'rule', 'severity'])
    assert.deepEqual(report.findings.map((f: {rule: string}) => f.rule).sort(), ['confine-path', 'file-writable', 'layout-ignored-top-level', 'release-missing'])
  })

  test('human output groups by file and ends with a verdict', () => {
    const bad = makeTree({'usr/share/x': {content: 'x', mode: 0o666}})
    const r = cli(['validate', bad, '--host-root', host])
    assert.equal(r.code, 1)
    assert.match(r.stdout, /^usr\/share\/x\n {2}error {3}usr\/share\/x is outside what an app's extension may contain.*\[confine-path\]\n.*\n {2}error {3}usr\/share\/x is world-writable/m)
    assert.match(r.stdout, /Hint: chmod go-w/)
    assert.match(r.stdout, /FAILED: .*3 errors/)
  })

  test('--strict turns warnings into errors', () => {
    const warned = makeTree({
      [`usr/lib/extension-release.d/extension-release.${NAME}`]: 'ID=_any\n',
      'usr/share/org.example.App/mine': {content: 'x', uid: 1000},
    })
    assert.equal(cli(['validate', warned, '--host-root', host]).code, 0)
    const strict = cli(['validate', warned, '--host-root', host, '--strict', '--json'])
    assert.equal(strict.code, 1)
    assert.equal(JSON.parse(strict.stdout).findings[0].severity, 'error')
  })

  test('usage errors exit 2 without a stack trace', () => {
    for (const args of [['validate'], ['validate', good, '--bogus'], ['validate', good, '--name', '../evil']]) {
      const r = cli(args)
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
      assert.doesNotMatch(r.stderr, /\n\s+at /)
    }
  })

  test('a nonexistent path and a file instead of a directory are clear errors', () => {
    const missing = cli(['validate', '/nonexistent/tree', '--host-root', host])
    assert.equal(missing.code, 1)
    assert.match(missing.stderr, /^Error: Cannot read extension tree '\/nonexistent\/tree': No such file or directory\.\nHint: /)
    const file = cli(['validate', `${host}/etc/os-release`, '--host-root', host, '--json'])
    assert.equal(file.code, 1)
    assert.equal(JSON.parse(file.stdout).error.code, 'TREE_NOT_DIRECTORY')
  })

  test('an APP-ID resolves through FLATPAK_SYSTEM_DIR and installations.d', () => {
    const installation = makeTree({
      'app/org.example.App/current': {symlink: 'x86_64/stable'},
      'app/org.example.App/x86_64/stable/active': {symlink: 'abc'},
      'app/org.example.App/x86_64/stable/abc/files/lib/extensions/usr/share/org.example.App/x': 'x',
    })
    const config = makeTree({'installations.d/extra.conf': `[Installation "extra"]\nPath=${installation}\n`})
    const env = {FLATPAK_SYSTEM_DIR: makeTree({'.keep': ''}), FLATPAK_CONFIG_DIR: config, FLATPAK_USER_DIR: '/nonexistent'}
    const r = cli(['validate', 'org.example.App', '--host-root', host, '--json'], env)
    const report = JSON.parse(r.stdout)
    assert.equal(report.origin, 'flatpak')
    assert.equal(report.name, 'org.example.App')
    assert.deepEqual(report.findings.map((f: {rule: string}) => f.rule), ['release-missing'])
    const missing = cli(['validate', 'org.example.Missing', '--host-root', host], env)
    assert.equal(missing.code, 1)
    assert.match(missing.stderr, /org\.example\.Missing is not installed in any system Flatpak installation \(searched .*, .*\)/)
  })
})

describe('release', () => {
  test('writes ID=_any and the host architecture; validate then passes', () => {
    const tree = makeTree({
      'usr/libexec/org.example.App/helper': {content: '#!/bin/sh\n', mode: 0o755},
      'usr/lib/systemd/system/example.service': '[Service]\nExecStart=/usr/libexec/org.example.App/helper\n',
      'usr/share/dbus-1/system-services/org.example.App.service':
        '[D-BUS Service]\nName=org.example.App\nExec=/usr/libexec/org.example.App/helper\nUser=root\nSystemdService=example.service\n',
    })
    const r = cli(['release', tree, '--name', NAME, '--json'])
    assert.equal(r.code, 0, r.stderr)
    const file = `${tree}/usr/lib/extension-release.d/extension-release.${NAME}`
    assert.equal(readFileSync(file, 'utf8'), 'ID=_any\nARCHITECTURE=x86-64\nEXTENSION_RELOAD_MANAGER=1\n')
    assert.equal(statSync(file).mode & 0o777, 0o644)
    assert.equal(cli(['validate', tree, '--host-root', host]).code, 0)
  })

  test('--id with the host version, and --dry-run writes nothing', () => {
    const tree = makeTree({'usr/share/x': 'x'})
    const r = cli(['release', tree, '--name', NAME, '--id', 'debian', '--version-id', '12', '--dry-run'])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stdout, 'ID=debian\nVERSION_ID=12\nARCHITECTURE=x86-64\n')
    assert.equal(existsSync(`${tree}/usr/lib/extension-release.d`), false)
  })

  test('refuses to write into a Flatpak deploy and suggests --output; --output stages a copy', () => {
    const deploy = makeTree({deploy: '', metadata: '[Application]\n', 'files/lib/extensions/usr/share/org.example.App/x': 'x'})
    const tree = `${deploy}/files/lib/extensions`
    const refused = cli(['release', tree, '--name', NAME])
    assert.equal(refused.code, 1)
    assert.match(refused.stderr, /inside the Flatpak deploy .* must never be written to\.\nHint: .*--output/)
    assert.equal(existsSync(`${tree}/usr/lib/extension-release.d`), false)
    const out = `${makeTree({})}/staged`
    const staged = cli(['release', tree, '--name', NAME, '--output', out, '--json'])
    assert.equal(staged.code, 0, staged.stderr)
    assert.equal(JSON.parse(staged.stdout).staged.linked, 1)
    assert.equal(statSync(`${out}/usr/share/org.example.App/x`).ino, statSync(`${tree}/usr/share/org.example.App/x`).ino)
    assert.equal(cli(['validate', out, '--host-root', host]).code, 0)
  })

  test('bad options are usage errors', () => {
    const tree = makeTree({'usr/share/x': 'x'})
    assert.equal(cli(['release', tree, '--name', NAME, '--architecture', 'amd64']).code, 2)
    assert.equal(cli(['release', tree, '--name', NAME, '--scope', 'initrd']).code, 2)
    assert.equal(cli(['release', tree, '--name', NAME, '--id', 'fedora']).code, 2)
    assert.equal(cli(['release', tree]).code, 2)
  })
})
