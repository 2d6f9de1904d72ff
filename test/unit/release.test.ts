import assert from 'node:assert/strict'
import {describe, test} from 'node:test'
import {judgeRelease} from '../../src/sysext/release.js'
import {parseRelease} from '../../src/formats/os-release.js'
import {makeHostRoot, makeTree} from '../lib/fixtures.js'
import {findingsFor, rulesOf} from '../lib/validate.js'
import {execFileSync} from 'node:child_process'

function setStrict(path: string, value: string): void {
  execFileSync('python3', ['-c', 'import os,sys; os.setxattr(sys.argv[1], "user.extension-release.strict", sys.argv[2].encode())', path, value])
}

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
  test('ID_LIKE matches only with systemd >= 257 (observed on Debian 13)', () => {
    const host = {osRelease: {ID: 'ubuntu', ID_LIKE: 'debian', VERSION_ID: '24.04'}, architecture: 'x86-64'}
    const old = judgeRelease('x', {ID: 'debian', VERSION_ID: '24.04'}, {...host, systemdVersion: 255})
    assert.equal(!old.accepted && old.rule, 'release-id-like')
    assert.deepEqual(judgeRelease('x', {ID: 'debian', VERSION_ID: '24.04'}, {...host, systemdVersion: 257}), {accepted: true, via: 'version-id'})
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

describe('parseRelease (systemd env-file grammar)', () => {
  const fields = (text: string | Buffer, kind: 'os-release' | 'extension-release' = 'extension-release', systemdVersion?: number) => parseRelease(text, {kind, systemdVersion})
  test('quoted and unquoted values; a line without = is ignored, not an error', () => {
    const parsed = fields('# comment\nID=debian\nPRETTY_NAME="Debian GNU/Linux 12"\nnot an assignment\n\n')
    assert.deepEqual(parsed, {fields: {ID: 'debian', PRETTY_NAME: 'Debian GNU/Linux 12'}})
  })
  test("single-quoted values are literal (VERSION_ID='12' is 12)", () => {
    assert.deepEqual(fields("VERSION_ID='12'\nA='x\\y \"z\"'\n").fields, {VERSION_ID: '12', A: 'x\\y "z"'})
  })
  test('# and ; inside a value are text; only at the start of a line they begin a comment', () => {
    assert.deepEqual(fields('ID=deb#ian\nB=a;b\n ; c=1\n#ID=x\n').fields, {ID: 'deb#ian', B: 'a;b'})
  })
  test('whitespace around the key and = is dropped, trailing whitespace of unquoted values too', () => {
    assert.deepEqual(fields('  ID = debian  \n\tVERSION_ID =\t"12 " \n').fields, {ID: 'debian', VERSION_ID: '12 '})
  })
  test('backslash escapes, continuation lines and concatenated quotes', () => {
    assert.deepEqual(fields('A=a\\ b\nB=x\\\ny\nC="q\\"\\$\\n"\nD=\'de\'"bi"an\nE="x" y\n').fields,
      {A: 'a b', B: 'xy', C: 'q"$\\n', D: 'debian', E: 'xy'})
  })
  test('a quote after unquoted text is text', () => {
    assert.deepEqual(fields("A=x 'y'\n").fields, {A: "x 'y'"})
  })
  test('the last assignment wins; KEY= is unset in os-release, empty in extension-release', () => {
    assert.deepEqual(fields('ID=a\nID=b\n').fields, {ID: 'b'})
    assert.deepEqual(fields('ID=a\nID=\n', 'os-release').fields, {})
    assert.deepEqual(fields('ID=a\nID=""\n', 'extension-release').fields, {ID: ''})
  })
  test('invalid UTF-8 in a value or a NUL byte makes the file unreadable; in a comment it does not matter', () => {
    assert.match(fields(Buffer.from([...Buffer.from('ID=deb'), 0xff, 0x0a])).error ?? '', /invalid UTF-8/)
    assert.match(fields(Buffer.from([...Buffer.from('ID=_any\n'), 0, 0x0a])).error ?? '', /NUL/)
    assert.deepEqual(fields(Buffer.from([0x23, 0xff, 0x0a, ...Buffer.from('ID=_any\n')])).fields, {ID: '_any'})
  })
  test('a UTF-8 BOM is not stripped: it becomes part of the first key', () => {
    assert.deepEqual(fields(Buffer.from('\ufeffID=_any\n')).fields, {'\ufeffID': '_any'})
  })
  test('CR ends a line; the last line needs no newline', () => {
    assert.deepEqual(fields('ID=debian\r\nVERSION_ID=12').fields, {ID: 'debian', VERSION_ID: '12'})
  })
  test('a comment ending in a backslash swallows the next line before systemd 254 only', () => {
    assert.deepEqual(fields('# x \\\nID=_any\n', 'extension-release', 252).fields, {})
    assert.deepEqual(fields('# x \\\nID=_any\n', 'extension-release', 257).fields, {ID: '_any'})
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
  test('a symlink to a regular file inside the image is followed, as systemd does', () => {
    const tree = makeTree({...payload, 'usr/share/org.example.App/release': 'ID=debian\nVERSION_ID=11\n', [REL]: {symlink: '../../share/org.example.App/release'}})
    const f = findingsFor(tree, {name: 'org.example.App'})
    assert.deepEqual(rulesOf(f).filter((r) => r.startsWith('release-')), ['release-version-id-mismatch'])
    assert.match(f.find((x) => x.rule === 'release-version-id-mismatch')?.message ?? '', /through the symlink/)
    const abs = makeTree({...payload, 'usr/share/org.example.App/release': 'ID=_any\n', [REL]: {symlink: '/usr/share/org.example.App/release'}})
    assert.deepEqual(rulesOf(findingsFor(abs, {name: 'org.example.App'})).filter((r) => r.startsWith('release-')), [])
  })
  test('release-not-regular: a symlink to a directory, or one that leads nowhere inside the image', () => {
    const dir = makeTree({...payload, 'usr/share/org.example.App/d/x': 'x', [REL]: {symlink: '../../share/org.example.App/d'}})
    assert.deepEqual(rulesOf(findingsFor(dir, {name: 'org.example.App'})).filter((r) => r.startsWith('release-')), ['release-not-regular'])
    // An escaping target is clamped to the image root: /etc/os-release of the image, which does not exist.
    const out = makeTree({...payload, [REL]: {symlink: '../../../../../../etc/os-release'}})
    const f = findingsFor(out, {name: 'org.example.App'}).filter((x) => x.rule.startsWith('release-'))
    assert.deepEqual(rulesOf(f), ['release-not-regular'])
    assert.match(f[0].message, /leads nowhere inside the image/)
    assert.deepEqual(rulesOf(findingsFor(makeTree({...payload, [`${REL}/x`]: 'ID=_any'}), {name: 'org.example.App'})).filter((r) => r.startsWith('release-')), ['release-not-regular'])
  })
  test('the xattr fallback: another single release file with user.extension-release.strict=0', () => {
    const other = 'usr/lib/extension-release.d/extension-release.other'
    const tree = makeTree({...payload, [other]: 'ID=_any\n'})
    setStrict(`${tree}/${other}`, '0')
    assert.deepEqual(findingsFor(tree, {name: 'org.example.App'}), [])
    setStrict(`${tree}/${other}`, '1')
    assert.deepEqual(rulesOf(findingsFor(tree, {name: 'org.example.App'})), ['release-name-mismatch'])
    const two = makeTree({...payload, [other]: 'ID=_any\n', 'usr/lib/extension-release.d/extension-release.third': 'ID=_any\n'})
    setStrict(`${two}/${other}`, 'no')
    setStrict(`${two}/usr/lib/extension-release.d/extension-release.third`, 'false')
    const f = findingsFor(two, {name: 'org.example.App'})
    assert.deepEqual(rulesOf(f), ['release-ambiguous'])
    assert.match(f[0].message, /not unique/)
  })
  test('release-unparsable: invalid UTF-8 in a value', () => {
    const f = findingsFor(makeTree({...payload, [REL]: {content: Buffer.from([...Buffer.from('ID=_any\nNAME=x'), 0xc3, 0x28, 0x0a])}}), {name: 'org.example.App'})
    assert.deepEqual(rulesOf(f), ['release-unparsable'])
    assert.match(f[0].message, /invalid UTF-8/)
  })
  test('release-host-id-missing: a host os-release without ID merges nothing', () => {
    const host = makeHostRoot('NAME=Nothing\nVERSION_ID=1\n')
    const f = findingsFor(makeTree({...payload, [REL]: 'ID=_any\n'}), {name: 'org.example.App', hostRoot: host})
    assert.deepEqual(rulesOf(f), ['release-host-id-missing'])
    const broken = makeHostRoot({content: Buffer.from([...Buffer.from('ID=debian\nNAME=caf'), 0xe9, 0x0a])})
    const g = findingsFor(makeTree({...payload, [REL]: 'ID=_any\n'}), {name: 'org.example.App', hostRoot: broken})
    assert.deepEqual(rulesOf(g), ['release-host-id-missing'])
    assert.match(g[0].message, /cannot be parsed \(line 2: invalid UTF-8/)
  })
  test("the host's os-release is read in the same grammar (single quotes)", () => {
    const host = makeHostRoot("ID='debian'\nVERSION_ID='12'\n")
    assert.deepEqual(findingsFor(makeTree({...payload, [REL]: 'ID=debian\nVERSION_ID=12\n'}), {name: 'org.example.App', hostRoot: host}), [])
  })
  test('release-empty', () => {
    const tree = makeTree({...payload, [REL]: '\n# nothing\n'})
    assert.deepEqual(rulesOf(findingsFor(tree, {name: 'org.example.App'})), ['release-empty'])
  })
  test('a line that is not KEY=VALUE is ignored, as systemd does', () => {
    assert.deepEqual(findingsFor(makeTree({...payload, [REL]: 'ID=_any\nthis is wrong\n'}), {name: 'org.example.App'}), [])
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
  test('release-id-like: ID_LIKE match on a host with systemd older than 257', () => {
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
