/**
 * Differential test of the release decision: the same host os-release, release
 * file and file name are judged by `validate` (its release-* rules) and by the real
 * `systemd-sysext refresh` on Debian 12 (systemd 252) and Debian 13 (systemd 257).
 * Any disagreement fails. One boot per host; every case swaps /etc/os-release and
 * the one image in /var/lib/extensions, refreshes, and reads what was merged.
 */
import assert from 'node:assert/strict'
import {execFileSync} from 'node:child_process'
import {lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {after, before, describe, test} from 'node:test'
import {validate} from '../../src/sysext/index.js'
import {FLAVORS, type Host, bootHost, canRunE2e, ensureRoots} from './lib/hosts.js'

const e2e = canRunE2e()
if (!e2e.ok) throw new Error(`e2e tests cannot run here: ${e2e.reason}`)
await ensureRoots()

type Content = string | Buffer
interface Layout {
  /** What to create under usr/lib/extension-release.d/ (and elsewhere), given the image name. */
  files: (name: string, content: Content) => Array<{path: string; content?: Content; symlink?: string; dir?: true; strict?: string}>
}

const RD = 'usr/lib/extension-release.d'
const LAYOUTS: Record<string, Layout> = {
  primary: {files: (n, c) => [{path: `${RD}/extension-release.${n}`, content: c}]},
  'symlink-relative': {files: (n, c) => [{path: `usr/share/${n}/release`, content: c}, {path: `${RD}/extension-release.${n}`, symlink: `../../share/${n}/release`}]},
  'symlink-absolute': {files: (n, c) => [{path: `usr/share/${n}/release`, content: c}, {path: `${RD}/extension-release.${n}`, symlink: `/usr/share/${n}/release`}]},
  'symlink-escaping': {files: (n, c) => [{path: `usr/share/${n}/release`, content: c}, {path: `${RD}/extension-release.${n}`, symlink: `../../../../../../../usr/share/${n}/release`}]},
  'symlink-dangling': {files: (n, c) => [{path: `usr/share/${n}/release`, content: c}, {path: `${RD}/extension-release.${n}`, symlink: `../../share/${n}/nothing`}]},
  'symlink-to-dir': {files: (n, c) => [{path: `usr/share/${n}/release`, content: c}, {path: `${RD}/extension-release.${n}`, symlink: `../../share/${n}`}]},
  'directory': {files: (n, c) => [{path: `${RD}/extension-release.${n}/x`, content: c}]},
  'other-name': {files: (_n, c) => [{path: `${RD}/extension-release.renamed`, content: c}]},
  'other-name-strict0': {files: (_n, c) => [{path: `${RD}/extension-release.renamed`, content: c, strict: '0'}]},
  'other-name-strict-no': {files: (_n, c) => [{path: `${RD}/extension-release.renamed`, content: c, strict: 'no'}]},
  'other-name-strict1': {files: (_n, c) => [{path: `${RD}/extension-release.renamed`, content: c, strict: '1'}]},
  'two-strict0': {files: (_n, c) => [{path: `${RD}/extension-release.renamed`, content: c, strict: '0'}, {path: `${RD}/extension-release.second`, content: c, strict: '0'}]},
  'primary-and-strict0': {files: (n, c) => [{path: `${RD}/extension-release.${n}`, content: c}, {path: `${RD}/extension-release.renamed`, content: 'ID=nothing\n', strict: '0'}]},
  'dangling-and-strict0': {files: (n, c) => [{path: `${RD}/extension-release.${n}`, symlink: 'nowhere'}, {path: `${RD}/extension-release.renamed`, content: c, strict: '0'}]},
}

/** Host os-release variants; VERSION is filled with the host's own VERSION_ID. */
const HOSTS: Record<string, (v: string) => Content | undefined> = {
  real: () => undefined, // the distribution's own file, untouched
  'single-quoted': (v) => `NAME='Debian'\nID='debian'\nVERSION_ID='${v}'\n`,
  'id-like': (v) => `ID=mydistro\nID_LIKE="ubuntu debian"\nVERSION_ID=${v}\n`,
  'sysext-level': (v) => `ID=debian\nVERSION_ID=${v}\nSYSEXT_LEVEL=1.0\n`,
  rolling: () => 'ID=debian\nPRETTY_NAME="rolling"\n',
  'no-id': (v) => `NAME=Nothing\nVERSION_ID=${v}\n`,
  'bom': (v) => `\ufeffID=debian\nVERSION_ID=${v}\n`,
  'hash-in-value': (v) => `ID=debian\nVERSION_ID=${v}#x\n`,
}

/** Release contents per host variant (v: the host's VERSION_ID). */
function contents(v: string): Record<string, Content> {
  const other = v === '12' ? '13' : '12'
  return {
    any: 'ID=_any\n',
    'id-version': `ID=debian\nVERSION_ID=${v}\n`,
    'id-version-single-quoted': `ID='debian'\nVERSION_ID='${v}'\n`,
    'id-version-double-quoted': `ID="debian"\nVERSION_ID="${v}"\n`,
    'wrong-version': `ID=debian\nVERSION_ID=${other}\n`,
    'no-version': 'ID=debian\n',
    'wrong-id': `ID=fedora\nVERSION_ID=${v}\n`,
    'id-like-target': `ID=ubuntu\nVERSION_ID=${v}\n`,
    'sysext-level': 'ID=debian\nSYSEXT_LEVEL=1.0\nVERSION_ID=99\n',
    'sysext-level-wrong': `ID=debian\nSYSEXT_LEVEL=2.0\nVERSION_ID=${v}\n`,
    'hash-in-value': `ID=debian\nVERSION_ID=${v}#comment\n`,
    'semicolon-comment-line': `; a comment\nID=debian\nVERSION_ID=${v}\n`,
    'spaces-around-equals': `  ID = debian\nVERSION_ID =   ${v}   \n`,
    'backslash-escape': `ID=deb\\ian\nVERSION_ID=${v}\n`,
    continuation: `ID=deb\\\nian\nVERSION_ID=${v}\n`,
    concatenated: `ID='deb'"ian"\nVERSION_ID="${v[0]}"'${v.slice(1)}'\n`,
    'stray-line': `this is not an assignment\nID=debian\nVERSION_ID=${v}\n`,
    'export-prefix': `export ID=debian\nVERSION_ID=${v}\n`,
    bom: Buffer.from(`\ufeffID=_any\n`),
    'bom-second-line': Buffer.from(`\ufeffNAME=x\nID=_any\n`),
    'invalid-utf8-value': Buffer.concat([Buffer.from('ID=_any\nNAME=caf'), Buffer.from([0xe9, 0x0a])]),
    'invalid-utf8-comment': Buffer.concat([Buffer.from('# caf'), Buffer.from([0xe9, 0x0a]), Buffer.from('ID=_any\n')]),
    'nul-byte': Buffer.concat([Buffer.from('ID=_any\n'), Buffer.from([0]), Buffer.from('\n')]),
    crlf: `ID=debian\r\nVERSION_ID=${v}\r\n`,
    'no-final-newline': `ID=debian\nVERSION_ID=${v}`,
    'comment-backslash': '# a comment \\\nID=_any\n',
    empty: '',
    'only-comments': '# nothing\n; here\n',
    'empty-id': `ID=\nVERSION_ID=${v}\n`,
    'duplicate-last-wins': `ID=fedora\nID=debian\nVERSION_ID=${other}\nVERSION_ID=${v}\n`,
    'scope-portable': 'ID=_any\nSYSEXT_SCOPE=portable\n',
    'scope-system-portable': 'ID=_any\nSYSEXT_SCOPE="portable system"\n',
    'scope-empty': 'ID=_any\nSYSEXT_SCOPE=\n',
    'arch-x86-64': 'ID=_any\nARCHITECTURE=x86-64\n',
    'arch-x86_64': 'ID=_any\nARCHITECTURE=x86_64\n',
    'arch-any': 'ID=_any\nARCHITECTURE=_any\n',
    'arch-arm64': 'ID=_any\nARCHITECTURE=arm64\n',
    'single-quoted-hash': `ID='debian'\nVERSION_ID='${v}'#x\n`,
  }
}

interface Case {
  host: string
  content: string
  layout: string
}

/** The case list: every content on the real host; selected ones on the other host variants; every layout with two contents. */
function cases(): Case[] {
  const out: Case[] = []
  const all = Object.keys(contents('12'))
  for (const content of all) out.push({host: 'real', content, layout: 'primary'})
  const perHost: Record<string, string[]> = {
    'single-quoted': ['id-version', 'id-version-single-quoted', 'any', 'no-version'],
    'id-like': ['id-like-target', 'id-version', 'wrong-id', 'any'],
    'sysext-level': ['sysext-level', 'sysext-level-wrong', 'id-version', 'no-version'],
    rolling: ['no-version', 'id-version', 'wrong-id'],
    'no-id': ['any', 'id-version'],
    bom: ['any', 'id-version'],
    'hash-in-value': ['id-version', 'hash-in-value'],
  }
  for (const [host, list] of Object.entries(perHost)) for (const content of list) out.push({host, content, layout: 'primary'})
  for (const layout of Object.keys(LAYOUTS)) {
    if (layout === 'primary') continue
    out.push({host: 'real', content: 'id-version', layout})
    out.push({host: 'real', content: 'wrong-version', layout})
  }
  return out
}

function setStrict(path: string, value: string): void {
  execFileSync('setfattr', ['-h', '-n', 'user.extension-release.strict', '-v', value, path])
}

for (const flavor of FLAVORS) {
  describe(`release decision: validate vs systemd-sysext on ${flavor}`, {concurrency: false}, () => {
    let host: Host
    let originalOsRelease: {symlink?: string; content?: Buffer}
    before(async () => {
      host = await bootHost(flavor)
      const etc = join(host.root, 'etc/os-release')
      originalOsRelease = lstatSync(etc).isSymbolicLink() ? {symlink: execFileSync('readlink', [etc], {encoding: 'utf8'}).trim()} : {content: readFileSync(etc)}
    })
    after(async () => {
      await host?.stop()
    })

    test('every case: validate agrees with the merge result', {timeout: 900_000}, async () => {
      const v = flavor === 'debian12' ? '12' : '13'
      const list = cases()
      assert.ok(list.length >= 60, `${list.length} cases`)
      const disagreements: string[] = []
      const seen = {merged: 0, refused: 0}
      const extDir = join(host.root, 'var/lib/extensions')
      let index = 0
      for (const c of list) {
        const name = `diff${index++}`
        // The host's os-release for this case.
        const etc = join(host.root, 'etc/os-release')
        rmSync(etc, {force: true})
        const hostText = HOSTS[c.host](v)
        if (hostText === undefined) {
          if (originalOsRelease.symlink) symlinkSync(originalOsRelease.symlink, etc)
          else writeFileSync(etc, originalOsRelease.content as Buffer)
        } else writeFileSync(etc, hostText)
        // The one image.
        rmSync(extDir, {recursive: true, force: true})
        const tree = join(extDir, name)
        mkdirSync(join(tree, 'usr/share/sysext-diff'), {recursive: true})
        writeFileSync(join(tree, 'usr/share/sysext-diff', name), 'x')
        for (const f of LAYOUTS[c.layout].files(name, contents(v)[c.content])) {
          const abs = join(tree, f.path)
          mkdirSync(dirname(abs), {recursive: true})
          if (f.symlink !== undefined) symlinkSync(f.symlink, abs)
          else writeFileSync(abs, f.content ?? '')
          if (f.strict !== undefined) setStrict(abs, f.strict)
        }
        const r = await host.exec('systemd-sysext', ['refresh'], {timeout: 60_000})
        const list = await host.sh('cat /usr/.systemd-sysext/extensions 2>/dev/null; test -e /usr/share/sysext-diff/' + name + ' && echo VISIBLE')
        const merged = list.stdout.split('\n').includes(name)
        assert.equal(merged, list.stdout.includes('VISIBLE'), `merged list and merged files agree for ${name}`)
        const report = validate(tree, {name, hostRoot: host.root}).report
        const releaseErrors = report.findings.filter((f) => f.rule.startsWith('release-') && f.severity === 'error')
        const accepted = releaseErrors.length === 0
        seen[merged ? 'merged' : 'refused']++
        if (accepted !== merged)
          disagreements.push(`${flavor} host=${c.host} content=${c.content} layout=${c.layout}: systemd-sysext ${merged ? 'merged it' : `did not merge it (exit ${r.exitCode}: ${r.stderr.trim().split('\n').slice(-1)[0] ?? ''})`}, validate ${accepted ? 'accepted it' : `refused it: ${releaseErrors.map((f) => `${f.rule}: ${f.message}`).join('; ')}`}`)
      }
      rmSync(extDir, {recursive: true, force: true})
      await host.exec('systemd-sysext', ['refresh'])
      rmSync(join(host.root, 'etc/os-release'), {force: true})
      if (originalOsRelease.symlink) symlinkSync(originalOsRelease.symlink, join(host.root, 'etc/os-release'))
      console.log(`# ${flavor}: ${list.length} cases, ${seen.merged} merged, ${seen.refused} refused, ${disagreements.length} disagreements`)
      assert.ok(seen.merged > 10 && seen.refused > 10, 'both verdicts are exercised')
      assert.deepEqual(disagreements, [])
    })
  })
}

