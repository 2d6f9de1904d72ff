import assert from 'node:assert/strict'
import {describe, test} from 'node:test'
import {judgeRelease} from '../../src/sysext/release.js'
import {parseRelease} from '../../src/formats/os-release.js'
import {makeHostRoot, makeTree} from '../lib/fixtures.js'
import {findingsFor, rulesOf} from '../lib/validate.js'

const debian12 = {osRelease: {ID: 'debian', VERSION_ID: '12'}, architecture: 'x86-64', systemdVersion: 252}

describe('judgeRelease follows systemd extension_release_validate', () => {
  test('ID=_any passes on any host', () => {
    assert.deepEqual(judgeRelease('x', {ID: '_any'}, debian12), {accepted: true, via: 'any'})
  })
  test('SYSEXT_SCOPE without system is refused first', () => {
    const v = judgeRelease('x', {ID: 'fedora', SYSEXT_SCOPE: 'portable initrd'}, debian12)
    assert.equal(v.accepted, false)
    assert.equal(!v.accepted && v.rule, 'release-scope')
  })
  test('default scope (absent) includes system', () => {
    assert.equal(judgeRelease('x', {ID: '_any'}, debian12).accepted, true)
  })
  test('ARCHITECTURE must be the host architecture in systemd names', () => {
    const v = judgeRelease('x', {ID: '_any', ARCHITECTURE: 'x86_64'}, debian12)
    assert.equal(!v.accepted && v.rule, 'release-architecture')
    assert.match(!v.accepted ? v.message : '', /ARCHITECTURE=x86_64 does not match the host architecture 'x86-64'/)
    assert.equal(judgeRelease('x', {ID: '_any', ARCHITECTURE: 'x86-64'}, debian12).accepted, true)
    assert.equal(judgeRelease('x', {ID: '_any', ARCHITECTURE: '_any'}, debian12).accepted, true)
  })
  test('architecture is checked before ID', () => {
    const v = judgeRelease('x', {ID: 'fedora', ARCHITECTURE: 'arm64'}, debian12)
    assert.equal(!v.accepted && v.rule, 'release-architecture')
  })
  test('empty ID is refused', () => {
    const v = judgeRelease('x', {ID: '', VERSION_ID: '12'}, debian12)
    assert.equal(!v.accepted && v.rule, 'release-id-missing')
  })
  test('a different ID is refused', () => {
    const v = judgeRelease('x', {ID: 'fedora', VERSION_ID: '40'}, debian12)
    assert.equal(!v.accepted && v.rule, 'release-id-mismatch')
  })
  test('ID_LIKE matches only with systemd >= 258', () => {
    const host = {osRelease: {ID: 'ubuntu', ID_LIKE: 'debian', VERSION_ID: '24.04'}, architecture: 'x86-64'}
    const old = judgeRelease('x', {ID: 'debian', VERSION_ID: '24.04'}, {...host, systemdVersion: 255})
    assert.equal(!old.accepted && old.rule, 'release-id-like')
    assert.deepEqual(judgeRelease('x', {ID: 'debian', VERSION_ID: '24.04'}, {...host, systemdVersion: 258}), {accepted: true, via: 'version-id'})
  })
  test('VERSION_ID must be present and equal when the host has one', () => {
    const missing = judgeRelease('x', {ID: 'debian'}, debian12)
    assert.equal(!missing.accepted && missing.rule, 'release-version-id-missing')
    const wrong = judgeRelease('x', {ID: 'debian', VERSION_ID: '13'}, debian12)
    assert.equal(!wrong.accepted && wrong.rule, 'release-version-id-mismatch')
    assert.deepEqual(judgeRelease('x', {ID: 'debian', VERSION_ID: '12'}, debian12), {accepted: true, via: 'version-id'})
  })
  test('SYSEXT_LEVEL on both sides is compared instead of VERSION_ID', () => {
    const host = {osRelease: {ID: 'fedora', VERSION_ID: '40', SYSEXT_LEVEL: '1.0'}, architecture: 'x86-64'}
    assert.deepEqual(judgeRelease('x', {ID: 'fedora', SYSEXT_LEVEL: '1.0', VERSION_ID: '39'}, host), {accepted: true, via: 'sysext-level'})
    const v = judgeRelease('x', {ID: 'fedora', SYSEXT_LEVEL: '2.0'}, host)
    assert.equal(!v.accepted && v.rule, 'release-sysext-level-mismatch')
  })
  test('host SYSEXT_LEVEL but extension without it falls back to VERSION_ID', () => {
    const host = {osRelease: {ID: 'fedora', VERSION_ID: '40', SYSEXT_LEVEL: '1.0'}, architecture: 'x86-64'}
    assert.equal(judgeRelease('x', {ID: 'fedora', VERSION_ID: '40'}, host).accepted, true)
    const v = judgeRelease('x', {ID: 'fedora', VERSION_ID: '39'}, host)
    assert.equal(!v.accepted && v.rule, 'release-version-id-mismatch')
  })
  test('a rolling host (no VERSION_ID, no SYSEXT_LEVEL) skips the version check', () => {
    const arch = {osRelease: {ID: 'arch'}, architecture: 'x86-64'}
    assert.deepEqual(judgeRelease('x', {ID: 'arch'}, arch), {accepted: true, via: 'rolling'})
  })
})

describe('parseRelease', () => {
  test('reads quoted and unquoted values and reports non-assignments', () => {
    const parsed = parseRelease('# comment\nID=debian\nPRETTY_NAME="Debian GNU/Linux 12"\nnot an assignment\n\n')
    assert.deepEqual(parsed.fields, {ID: 'debian', PRETTY_NAME: 'Debian GNU/Linux 12'})
    assert.deepEqual(parsed.badLines, [{line: 4, text: 'not an assignment'}])
  })
})

const REL = 'usr/lib/extension-release.d/extension-release.org.example.App'
const payload = {'usr/share/doc/org.example.App/README': 'x'}

describe('release rules on trees', () => {
  test('release-missing: no release file and no name', () => {
    const f = findingsFor(makeTree(payload))
    const missing = f.find((x) => x.rule === 'release-missing')
    assert.ok(missing)
    assert.equal(missing.severity, 'error')
    assert.equal(missing.file, 'usr/lib/extension-release.d')
    assert.match(missing.hint, /sysext-helper release/)
  })
  test('release-missing: named extension without its file', () => {
    const f = findingsFor(makeTree(payload), {name: 'org.example.App'})
    assert.deepEqual(f.map((x) => [x.rule, x.file]), [['release-missing', REL]])
  })
  test('a correct release file produces no release finding', () => {
    assert.deepEqual(findingsFor(makeTree({...payload, [REL]: 'ID=_any\n'}), {name: 'org.example.App'}), [])
    assert.deepEqual(findingsFor(makeTree({...payload, [REL]: 'ID=debian\nVERSION_ID=12\n'}), {name: 'org.example.App'}), [])
  })
  test('release-ambiguous: several release files without --name', () => {
    const tree = makeTree({...payload, [REL]: 'ID=_any\n', 'usr/lib/extension-release.d/extension-release.other': 'ID=_any\n'})
    assert.deepEqual(rulesOf(findingsFor(tree)), ['release-ambiguous'])
  })
  test('release-name-mismatch: file named for another extension', () => {
    const tree = makeTree({...payload, 'usr/lib/extension-release.d/extension-release.other': 'ID=_any\n'})
    const f = findingsFor(tree, {name: 'org.example.App'})
    assert.deepEqual(rulesOf(f), ['release-name-mismatch'])
    assert.equal(f[0].file, 'usr/lib/extension-release.d/extension-release.other')
  })
  test('release-not-regular: a symlink', () => {
    const tree = makeTree({...payload, 'usr/share/org.example.App/release': 'ID=_any\n', [REL]: {symlink: '../../share/org.example.App/release'}})
    assert.deepEqual(rulesOf(findingsFor(tree, {name: 'org.example.App'})), ['release-not-regular'])
  })
  test('release-empty', () => {
    const tree = makeTree({...payload, [REL]: '\n# nothing\n'})
    assert.deepEqual(rulesOf(findingsFor(tree, {name: 'org.example.App'})), ['release-empty'])
  })
  test('release-unparsable: a line that is not KEY=VALUE', () => {
    const f = findingsFor(makeTree({...payload, [REL]: 'ID=_any\nthis is wrong\n'}), {name: 'org.example.App'})
    assert.deepEqual(rulesOf(f), ['release-unparsable'])
    assert.match(f[0].message, /Line 2/)
  })
  for (const [rule, text] of [
    ['release-scope', 'ID=_any\nSYSEXT_SCOPE=initrd\n'],
    ['release-architecture', 'ID=_any\nARCHITECTURE=arm64\n'],
    ['release-id-missing', 'VERSION_ID=12\n'],
    ['release-id-mismatch', 'ID=fedora\nVERSION_ID=40\n'],
    ['release-version-id-missing', 'ID=debian\n'],
    ['release-version-id-mismatch', 'ID=debian\nVERSION_ID=11\n'],
  ]) {
    test(`${rule} reported with the release file`, () => {
      const f = findingsFor(makeTree({...payload, [REL]: text}), {name: 'org.example.App'})
      assert.deepEqual(f.map((x) => [x.rule, x.severity, x.file]), [[rule, 'error', REL]])
    })
  }
  test('release-sysext-level-mismatch against a host with SYSEXT_LEVEL', () => {
    const host = makeHostRoot('ID=fedora\nVERSION_ID=40\nSYSEXT_LEVEL=2\n')
    const f = findingsFor(makeTree({...payload, [REL]: 'ID=fedora\nSYSEXT_LEVEL=1\n'}), {name: 'org.example.App', hostRoot: host})
    assert.deepEqual(rulesOf(f), ['release-sysext-level-mismatch'])
  })
  test('release-id-like: ID_LIKE match on a host with systemd older than 258', () => {
    const host = makeHostRoot('ID=ubuntu\nID_LIKE=debian\nVERSION_ID=24.04\n', {'usr/lib/systemd/libsystemd-shared-255.so': ''})
    const f = findingsFor(makeTree({...payload, [REL]: 'ID=debian\nVERSION_ID=24.04\n'}), {name: 'org.example.App', hostRoot: host})
    assert.deepEqual(rulesOf(f), ['release-id-like'])
    assert.match(f[0].message, /systemd 255/)
  })
  test('host without /etc/os-release falls back to /usr/lib/os-release', () => {
    const host = makeTree({'usr/lib/os-release': 'ID=arch\n'})
    assert.deepEqual(findingsFor(makeTree({...payload, [REL]: 'ID=arch\n'}), {name: 'org.example.App', hostRoot: host}), [])
  })
})
