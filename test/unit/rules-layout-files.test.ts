import assert from 'node:assert/strict'
import {mkdtempSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {describe, test} from 'node:test'
import {makeHostRoot, makeTree} from '../lib/fixtures.js'
import {findingsFor} from '../lib/validate.js'

const NAME = 'org.example.App'
const REL = {[`usr/lib/extension-release.d/extension-release.${NAME}`]: 'ID=_any\n'}

function only(rule: string, tree: string, origin: 'path' | 'flatpak' = 'path') {
  return findingsFor(tree, {name: NAME, origin}).filter((f) => f.rule === rule).map((f) => [f.severity, f.file])
}

describe('layout rules', () => {
  test('a clean tree has no findings', () => {
    assert.deepEqual(findingsFor(makeTree({...REL, 'usr/share/org.example.App/data': 'x', 'opt/org.example.App/x': 'y'}), {name: NAME}), [])
  })
  test('layout-ignored-top-level: etc/ and stray files are dropped by systemd-sysext', () => {
    const tree = makeTree({...REL, 'etc/foo.conf': 'x', 'README': 'x', 'usr/share/x': 'y'})
    assert.deepEqual(only('layout-ignored-top-level', tree), [['error', 'etc'], ['error', 'README']])
  })
  test('layout-ignored-top-level: usr as a symlink is not merged', () => {
    const tree = makeTree({'real/lib/extension-release.d/extension-release.org.example.App': 'ID=_any\n', usr: {symlink: 'real'}})
    assert.ok(only('layout-ignored-top-level', tree).some(([, file]) => file === 'usr'))
  })
  test('layout-empty: nothing under usr/', () => {
    assert.deepEqual(only('layout-empty', makeTree({'usr/share': {dir: true}})), [['error', '']])
    assert.deepEqual(only('layout-empty', makeTree({...REL})), [])
  })
  test('layout-os-release: usr/lib/os-release inside', () => {
    assert.deepEqual(only('layout-os-release', makeTree({...REL, 'usr/lib/os-release': 'ID=x\n'})), [['error', 'usr/lib/os-release']])
  })
  test('layout-hardlink-outside: a non-root file linked from outside the tree', () => {
    const outside = mkdtempSync(join(tmpdir(), 'sysext-outside-'))
    writeFileSync(join(outside, 'f'), 'x')
    const tree = makeTree({...REL, 'usr/share/x/linked': {link: join(outside, 'f'), uid: 1000}, 'usr/share/x/inside-a': {content: 'y', uid: 1000}})
    assert.deepEqual(only('layout-hardlink-outside', tree), [['warning', 'usr/share/x/linked']])
  })
})

describe('file rules', () => {
  test('file-setuid and file-setgid', () => {
    const tree = makeTree({...REL, 'usr/libexec/x/suid': {content: 'x', mode: 0o4755}, 'usr/libexec/x/sgid': {content: 'x', mode: 0o2755}, 'usr/libexec/x/plain': {content: 'x', mode: 0o755}})
    assert.deepEqual(only('file-setuid', tree), [['error', 'usr/libexec/x/sgid'], ['error', 'usr/libexec/x/suid']])
  })
  test('file-writable: group- and world-writable files and directories', () => {
    const tree = makeTree({...REL, 'usr/share/x/world': {content: 'x', mode: 0o666}, 'usr/share/x/group': {content: 'x', mode: 0o664}, 'usr/share/y': {dir: true, mode: 0o777}, 'usr/share/x/fine': {content: 'x', mode: 0o644}})
    assert.deepEqual(only('file-writable', tree), [['error', 'usr/share/x/group'], ['error', 'usr/share/x/world'], ['error', 'usr/share/y']])
  })
  test('file-owner: warning for a path tree, reported once per foreign subtree', () => {
    const tree = makeTree({...REL, 'usr/share/mine': {dir: true, uid: 1000}, 'usr/share/mine/a': {content: 'x', uid: 1000}, 'usr/share/mine/b': {content: 'x', uid: 1000}, 'usr/share/root-owned': 'x'})
    const f = findingsFor(tree, {name: NAME}).filter((x) => x.rule === 'file-owner')
    assert.deepEqual(f.map((x) => [x.severity, x.file]), [['warning', 'usr/share/mine']])
    assert.match(f[0].message, /and 2 entries inside.*uid 1000/)
  })
  test('file-owner: error in a Flatpak deploy (deploys are root-owned)', () => {
    const tree = makeTree({...REL, 'usr/share/x': {content: 'x', uid: 1000}})
    assert.deepEqual(only('file-owner', tree, 'flatpak'), [['error', 'usr/share/x']])
  })
  test('file-special: a FIFO', () => {
    assert.deepEqual(only('file-special', makeTree({...REL, 'usr/share/x/fifo': {fifo: true}})), [['error', 'usr/share/x/fifo']])
  })
  test('file-unreadable: an entry the scan could not read (here: a config file over the 1 MiB limit)', () => {
    const tree = makeTree({...REL, 'usr/share/dbus-1/system.d/huge.conf': {content: Buffer.alloc(1024 * 1024 + 1, 0x41)}})
    assert.deepEqual(only('file-unreadable', tree), [['error', 'usr/share/dbus-1/system.d/huge.conf']])
  })
  test('files outside usr/ and opt/ are not judged (they are not merged)', () => {
    assert.deepEqual(only('file-writable', makeTree({...REL, 'usr/share/x': 'x', 'build/tmp': {content: 'x', mode: 0o666}})), [])
  })
})

describe('host-protection rules', () => {
  test('layout-shadows-host: a file the host already has (usr/bin/sudo) is refused; new files are fine', () => {
    const host = makeHostRoot('ID=debian\nVERSION_ID=12\n', {'usr/bin/sudo': {content: 'real', mode: 0o755}, 'usr/share/doc': {dir: true}})
    const tree = makeTree({...REL, 'usr/bin/sudo': {content: 'evil', mode: 0o755}, 'usr/share/doc/org.example.App/README': 'x'})
    const f = findingsFor(tree, {name: NAME, hostRoot: host}).filter((x) => x.rule === 'layout-shadows-host')
    assert.deepEqual(f.map((x) => [x.severity, x.file]), [['error', 'usr/bin/sudo']])
  })
})
