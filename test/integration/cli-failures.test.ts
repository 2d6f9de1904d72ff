/**
 * The first failures a newcomer meets, as they meet them: the CLI as a subprocess.
 * Exit codes follow one table (README "Exit codes": 0 ok, 1 failure or bad input,
 * 2 usage). Where this machine runs no systemd as init (CI, containers), the
 * commands that need a booted host say so once, with one typed error, after
 * checking their arguments.
 */
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import {join} from 'node:path'
import {describe, test} from 'node:test'
import {CLI, DEBIAN_12, REPO_ROOT, makeHostRoot, makeTree} from '../lib/fixtures.js'

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], {encoding: 'utf8', env: {...process.env, NO_COLOR: '1'}})
  const parse = (text: string) => {
    try {
      return JSON.parse(text)
    } catch {
      return undefined
    }
  }
  // capture keeps stdout for pcap: its JSON goes to stderr.
  return {code: r.status, stdout: r.stdout, stderr: r.stderr, json: parse(r.stdout) ?? parse(r.stderr)}
}

const booted = existsSync('/run/systemd/system')
const GOOD = `${REPO_ROOT}/test/fixtures/e2e/good`

describe('exit codes: bad input is 1, usage is 2', () => {
  const file = join(makeTree({'f': 'x'}), 'f')
  const cases: Array<[string[], number, string | undefined]> = [
    [['validate'], 2, 'USAGE'],
    [['validate', GOOD, '--bogus'], 2, 'USAGE'],
    [['validate', GOOD, '--allow', 'everything'], 2, 'USAGE'],
    [['validate', '/nonexistent/tree'], 1, 'TREE_NOT_FOUND'],
    [['validate', file], 1, 'TREE_NOT_DIRECTORY'],
    [['validate', GOOD, '--host-root', '/nonexistent'], 1, 'HOST_ROOT_NOT_FOUND'],
    [['validate', GOOD, '--host-root', file], 1, 'HOST_ROOT_NOT_DIRECTORY'],
    [['validate', GOOD, '--host-root', makeTree({'etc/x': ''})], 1, 'HOST_NO_OS_RELEASE'],
    [['release', GOOD], 2, 'RELEASE_NEEDS_NAME'],
    [['release', GOOD, '--name', 'x', '--architecture', 'amd64'], 2, 'RELEASE_BAD_ARCHITECTURE'],
    [['install', '/nonexistent/tree', '--name', 'x'], 1, 'TREE_NOT_FOUND'],
    [['install', file, '--name', 'x'], 1, 'TREE_NOT_DIRECTORY'],
    [['install', GOOD, '--target', 'nowhere'], 2, 'USAGE'],
    [['uninstall'], 2, 'USAGE'],
    [['status', 'not.managed'], 1, 'STATUS_NOT_MANAGED'],
    [['revoke', 'not-an-app-id'], 2, 'INVALID_APP_ID'],
    [['capture', '--bogus'], 2, 'USAGE'],
  ]
  for (const [args, exit, code] of cases) {
    test(`${args.join(' ')} -> ${exit}${code ? ` ${code}` : ''}`, () => {
      const r = cli([...args, '--json'])
      assert.equal(r.code, exit, r.stdout + r.stderr)
      if (code) assert.equal(r.json?.error?.code, code, r.stdout)
    })
  }
  test('a missing argument names it and the help to read, in one line each', () => {
    const r = cli(['validate'])
    assert.equal(r.code, 2)
    assert.equal(r.stderr, "Error: Missing 1 required arg: target — Extension tree (the directory holding usr/) or a Flatpak app id\nHint: See 'sysext-helper validate --help'.\n")
  })
  test('a capture that fails before writing anything removes the output file it created', () => {
    const out = join(makeTree({}), 'capture.pcap')
    const r = cli(['capture', '--address', 'unix:path=/nonexistent/bus', '--output', out])
    assert.equal(r.code, 1, r.stderr)
    assert.equal(existsSync(out), false, 'no empty pcap left behind')
  })
  test('--allow takes one value: a path after it stays the argument', () => {
    const r = cli(['validate', '--allow', 'commands', GOOD, '--name', 'org.sysexthelper.Test1', '--host-root', makeHostRoot(DEBIAN_12), '--json'])
    assert.deepEqual(r.json?.allowed, ['commands'], r.stderr)
    assert.equal(r.json?.path, GOOD)
  })
})

describe('on a machine without systemd as init', {skip: booted ? 'this machine runs systemd: these paths need one that does not (CI)' : false}, () => {
  test('install checks its argument first: a missing tree is reported as such, not as a host problem', () => {
    const r = cli(['install', './no-such-tree', '--name', 'x'])
    assert.equal(r.code, 1)
    assert.match(r.stderr, /^Error: Cannot read extension tree '.*no-such-tree': No such file or directory\./)
    assert.doesNotMatch(r.stderr, /systemd|preflight/)
  })
  for (const args of [['install', GOOD, '--name', 'org.sysexthelper.Test1'], ['uninstall', 'org.sysexthelper.Test1']]) {
    test(`${args[0]}: one typed error NOT_BOOTED_WITH_SYSTEMD naming PID 1, hinting at npm run demo, no command lines`, () => {
      const r = cli(args)
      assert.equal(r.code, 1)
      const errors = r.stderr.split('\n').filter((l) => l.startsWith('Error: '))
      assert.equal(errors.length, 1, r.stderr)
      assert.match(errors[0], /not running systemd as its init system \(PID 1 is '[^']+'\)/)
      assert.match(r.stderr, /Hint: .*npm run demo/)
      assert.doesNotMatch(r.stderr, /systemctl show|--property=/)
      assert.equal(cli([...args, '--json']).json?.error?.code, 'NOT_BOOTED_WITH_SYSTEMD')
    })
  }
  test('doctor names the real problem (no systemd as init) and does not blame systemd-sysext', () => {
    const r = cli(['doctor', '--json'])
    assert.equal(r.code, 1)
    const checks = r.json.checks as Array<{id: string; ok: boolean; message: string; fix?: string}>
    const booted = checks.find((c) => c.id === 'booted')
    assert.ok(booted && !booted.ok, JSON.stringify(checks))
    assert.match(booted.fix ?? '', /npm run demo/)
    const sysext = checks.find((c) => c.id === 'systemd-sysext')
    if (existsSync('/usr/bin/systemd-sysext') || existsSync('/bin/systemd-sysext')) assert.ok(sysext?.ok, `systemd-sysext is installed here: ${JSON.stringify(sysext)}`)
  })
})

