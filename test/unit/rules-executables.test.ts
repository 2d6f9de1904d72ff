import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {describe, it} from 'node:test'
import {type ElfInfo, parseElfFile} from '../../src/formats/elf.js'
import type {Finding} from '../../src/sysext/findings.js'
import {loadHost} from '../../src/sysext/host.js'
import {executablesRules} from '../../src/sysext/rules/executables.js'
import {type Tree, type TreeEntry, scanTree} from '../../src/sysext/tree.js'
import {type ElfSpec, EM, buildElf} from '../lib/elf-builder.js'
import {DEBIAN_12, type FileSpec, makeHostRoot, makeTree} from '../lib/fixtures.js'

const LOADER = '/lib64/ld-linux-x86-64.so.2'

/** A Debian-like x86-64 host: its /usr/bin/sh fixes the architecture, whatever machine runs the tests. */
const X86_64_HOST: Record<string, FileSpec> = {
  'usr/bin/sh': {content: buildElf({type: 'exec'}), mode: 0o755},
  'etc/ld.so.conf': '/usr/lib/x86_64-linux-gnu\n',
  [LOADER.slice(1)]: '',
  'usr/lib/x86_64-linux-gnu/libc.so.6': '',
}

const program = (spec: ElfSpec = {}): FileSpec => ({content: buildElf({interpreter: LOADER, needed: ['libc.so.6'], ...spec}), mode: 0o755})
const library = (spec: ElfSpec = {}): FileSpec => ({content: buildElf({needed: ['libc.so.6'], ...spec}), mode: 0o644})

function check(treeFiles: Record<string, FileSpec>, hostFiles: Record<string, FileSpec> = X86_64_HOST): Finding[] {
  const tree = scanTree(makeTree(treeFiles))
  const host = loadHost(makeHostRoot(DEBIAN_12, hostFiles))
  return executablesRules.check({tree, host, name: undefined, origin: 'path'})
}

/** rule, severity and file of each finding: what a test asserts on. */
const brief = (findings: Finding[]): string[][] => findings.map((f) => [f.rule, f.severity, f.file])


describe('executables rules: the real /bin/true', () => {
  // Host roots are built from what /bin/true asks for, so this runs on any architecture.
  const trueElf = parseElfFile('/bin/true')
  const trueTree = {'usr/libexec/helper': {content: readFileSync('/bin/true'), mode: 0o755}}
  const hostWith = (libs: string[], interpreter = true): Record<string, FileSpec> => ({
    ...(interpreter && trueElf.interpreter ? {[trueElf.interpreter.slice(1)]: ''} : {}),
    ...Object.fromEntries(libs.map((name) => [`usr/lib/${name}`, ''])),
  })

  it('passes when the host has its interpreter and libraries', () => {
    assert.deepEqual(check(trueTree, hostWith(trueElf.needed)), [])
  })

  it('reports exec-library-missing when the host lacks libc', () => {
    const findings = check(trueTree, hostWith(trueElf.needed.filter((n) => n !== 'libc.so.6')))
    assert.deepEqual(brief(findings), [['exec-library-missing', 'error', 'usr/libexec/helper']])
    assert.match(findings[0].message, /^usr\/libexec\/helper needs libc\.so\.6, which is neither in the extension nor on the host \(searched \/[^)]*\); activation will fail with "error while loading shared libraries"\.$/)
    assert.match(findings[0].hint, /RUNPATH \$ORIGIN\/\.\.\/lib\/<app>/)
  })

  it('reports exec-interpreter-missing when the host lacks its ELF interpreter', () => {
    const findings = check(trueTree, hostWith(trueElf.needed, false))
    assert.deepEqual(brief(findings), [['exec-interpreter-missing', 'error', 'usr/libexec/helper']])
    assert.ok(findings[0].message.includes(trueElf.interpreter as string))
  })
})

describe('executables rules: library search', () => {
  for (const origin of ['$ORIGIN', '${ORIGIN}']) {
    it(`finds the extension's own library through RUNPATH ${origin}`, () => {
      assert.deepEqual(check({
        'usr/libexec/foo-helper': program({needed: ['libx.so.1', 'libc.so.6'], runpath: `${origin}/../lib/foo`}),
        'usr/lib/foo/libx.so.1': library({soname: 'libx.so.1'}),
      }), [])
    })
  }

  it('expands $LIB in RUNPATH to the library directory names glibc builds use', () => {
    assert.deepEqual(check({
      'opt/foo/bin/foo-helper': program({needed: ['libx.so.1'], runpath: '/opt/foo/$LIB'}),
      'opt/foo/lib64/libx.so.1': library(),
    }), [])
  })

  it('reports a library that RUNPATH points at but nobody ships, naming the directories searched', () => {
    const findings = check({'usr/libexec/foo-helper': program({needed: ['libx.so.1'], runpath: '$ORIGIN/../lib/foo'})})
    assert.deepEqual(brief(findings), [['exec-library-missing', 'error', 'usr/libexec/foo-helper']])
    assert.match(findings[0].message, /needs libx\.so\.1, .* \(searched \/usr\/lib\/foo, \/usr\/lib\/x86_64-linux-gnu, \/lib64, \/usr\/lib\)/)
  })

  it('finds a library the extension ships in one of the host\'s library directories', () => {
    assert.deepEqual(check({
      'usr/libexec/foo-helper': program({needed: ['libx.so.1']}),
      'usr/lib/x86_64-linux-gnu/libx.so.1': library(),
    }), [])
  })

  it('reports a shipped library\'s missing dependency once, on the program that loads it', () => {
    const findings = check({
      'usr/libexec/foo-helper': program({needed: ['libx.so.1', 'libgone.so.3'], runpath: '$ORIGIN/../lib/foo'}),
      'usr/lib/foo/libx.so.1': library({needed: ['libgone.so.3']}),
    })
    assert.deepEqual(brief(findings), [['exec-library-missing', 'error', 'usr/libexec/foo-helper']])
    assert.match(findings[0].message, /libgone\.so\.3/)
  })

  it('names the shipped library through which a dependency is missing', () => {
    const findings = check({
      'usr/libexec/foo-helper': program({needed: ['libx.so.1'], runpath: '$ORIGIN/../lib/foo'}),
      'usr/lib/foo/libx.so.1': library({needed: ['libgone.so.3']}),
    })
    assert.deepEqual(brief(findings), [['exec-library-missing', 'error', 'usr/libexec/foo-helper']])
    assert.match(findings[0].message, /^usr\/libexec\/foo-helper loads usr\/lib\/foo\/libx\.so\.1, which needs libgone\.so\.3/)
  })

  it('judges a library no program loads (a plugin) on its own', () => {
    const findings = check({'usr/lib/foo/plugins/libplugin.so': library({needed: ['libgone.so.3']})})
    assert.deepEqual(brief(findings), [['exec-library-missing', 'error', 'usr/lib/foo/plugins/libplugin.so']])
    assert.match(findings[0].message, /loading it will fail/)
  })

  it('applies a program\'s DT_RPATH to its libraries\' dependencies, but not its DT_RUNPATH, as ld.so does', () => {
    const tree = (paths: ElfSpec): Record<string, FileSpec> => ({
      'usr/libexec/foo-helper': program({needed: ['libx.so.1'], ...paths}),
      'usr/lib/foo/libx.so.1': library({needed: ['liby.so.1']}),
      'usr/lib/foo/liby.so.1': library(),
    })
    assert.deepEqual(check(tree({rpath: '$ORIGIN/../lib/foo'})), [])
    const findings = check(tree({runpath: '$ORIGIN/../lib/foo'}))
    assert.deepEqual(brief(findings), [['exec-library-missing', 'error', 'usr/libexec/foo-helper']])
    assert.match(findings[0].message, /loads usr\/lib\/foo\/libx\.so\.1, which needs liby\.so\.1/)
  })

  it('skips a shipped library of the wrong architecture and says so', () => {
    const files = {
      'usr/libexec/foo-helper': program({needed: ['libx.so.1'], runpath: '$ORIGIN/../lib/foo'}),
      'usr/lib/foo/libx.so.1': library({machine: EM.AARCH64}),
    }
    const findings = check(files)
    assert.deepEqual(brief(findings), [
      ['exec-architecture-mismatch', 'error', 'usr/lib/foo/libx.so.1'],
      ['exec-library-missing', 'error', 'usr/libexec/foo-helper'],
    ])
    assert.match(findings[1].message, /skipped: usr\/lib\/foo\/libx\.so\.1 is 64-bit arm64, not 64-bit x86-64/)
    // ld.so moves on to the host's directories, where a matching copy is found.
    const hostHasIt = check(files, {...X86_64_HOST, 'usr/lib/x86_64-linux-gnu/libx.so.1': ''})
    assert.deepEqual(brief(hostHasIt), [['exec-architecture-mismatch', 'error', 'usr/lib/foo/libx.so.1']])
  })
})

describe('executables rules: architecture and format', () => {
  it('reports an arm64 program on an x86-64 host', () => {
    const findings = check({'usr/libexec/foo-helper': program({machine: EM.AARCH64, interpreter: '/lib/ld-linux-aarch64.so.1'})})
    assert.deepEqual(brief(findings), [['exec-architecture-mismatch', 'error', 'usr/libexec/foo-helper']])
    assert.match(findings[0].message, /built for arm64, but the host is x86-64/)
  })

  it('accepts 32-bit x86 on x86-64, which the kernel runs', () => {
    const findings = check({'usr/libexec/foo-helper': program({bits: 32, machine: EM.I386, interpreter: '/lib/ld-linux.so.2'})})
    assert.deepEqual(brief(findings), [['exec-interpreter-missing', 'error', 'usr/libexec/foo-helper']])
  })

  it('reports an executable that starts like ELF but is malformed', () => {
    const truncated = buildElf({interpreter: LOADER, needed: ['libc.so.6']}).subarray(0, 80)
    const findings = check({'usr/libexec/foo-helper': {content: truncated, mode: 0o755}})
    assert.deepEqual(brief(findings), [['exec-malformed', 'error', 'usr/libexec/foo-helper']])
  })

  it('ignores files outside usr/ and opt/, and separate debug info', () => {
    assert.deepEqual(check({
      'etc/foo/helper': program({machine: EM.AARCH64}),
      'usr/lib/debug/usr/lib/foo/libx.so.1.debug': library({machine: EM.AARCH64}),
      'usr/lib/firmware/dsp.elf': program({machine: EM.ARM, bits: 32}),
    }), [])
  })
})

describe('executables rules: scripts', () => {
  const script = (shebang: string): FileSpec => ({content: `#!${shebang}\nprint("hi")\n`, mode: 0o755})
  const hostWith = (files: Record<string, FileSpec>): Record<string, FileSpec> => ({...X86_64_HOST, ...files})
  const exe = {content: '', mode: 0o755}

  it('reports a #! interpreter the host does not have', () => {
    const findings = check({'usr/libexec/foo-helper': script('/usr/bin/python3')})
    assert.deepEqual(brief(findings), [['exec-script-interpreter-missing', 'error', 'usr/libexec/foo-helper']])
    assert.match(findings[0].message, /#!\/usr\/bin\/python3/)
  })

  it('passes when the host has the interpreter, executable', () => {
    assert.deepEqual(check({'usr/libexec/foo-helper': script('/usr/bin/python3 -u')}, hostWith({'usr/bin/python3': exe})), [])
  })

  it('reports an interpreter that exists but is not executable', () => {
    const findings = check({'usr/libexec/foo-helper': script('/usr/bin/python3')}, hostWith({'usr/bin/python3': {content: '', mode: 0o644}}))
    assert.deepEqual(brief(findings), [['exec-script-interpreter-missing', 'error', 'usr/libexec/foo-helper']])
    assert.match(findings[0].message, /not executable \(mode 644\); activation will fail with "Permission denied"/)
  })

  it('accepts an interpreter the extension itself ships', () => {
    assert.deepEqual(check({'usr/libexec/foo-helper': script('/usr/lib/foo/interp'), 'usr/lib/foo/interp': script('/bin/sh')},
      hostWith({'bin/sh': exe})), [])
  })

  it('looks up "/usr/bin/env python3" in the host\'s PATH', () => {
    const tree = {'usr/libexec/foo-helper': script('/usr/bin/env python3')}
    assert.deepEqual(check(tree, hostWith({'usr/bin/env': exe, 'usr/bin/python3': exe})), [])
    assert.deepEqual(check(tree, hostWith({'usr/bin/env': exe, 'sbin/python3': exe})), [])
    const findings = check(tree, hostWith({'usr/bin/env': exe}))
    assert.deepEqual(brief(findings), [['exec-script-interpreter-missing', 'error', 'usr/libexec/foo-helper']])
    assert.match(findings[0].message, /runs "python3" through \/usr\/bin\/env, but no executable python3 is in \/usr\/bin, \/bin, \/usr\/sbin, \/sbin/)
  })

  it('knows the kernel passes "env python3 -u" as one word, and that env -S splits it', () => {
    const host = hostWith({'usr/bin/env': exe, 'usr/bin/python3': exe})
    const findings = check({'usr/libexec/foo-helper': script('/usr/bin/env python3 -u')}, host)
    assert.deepEqual(brief(findings), [['exec-script-interpreter-missing', 'error', 'usr/libexec/foo-helper']])
    assert.match(findings[0].hint, /-S python3 -u/)
    assert.deepEqual(check({'usr/libexec/foo-helper': script('/usr/bin/env -S python3 -u')}, host), [])
  })
})

describe('executables rules: performance', () => {
  it('checks a 10,000-entry tree with 1,000 programs within its share of the 0.5 s budget', () => {
    const host = loadHost(makeHostRoot(DEBIAN_12, X86_64_HOST))
    const entries = new Map<string, TreeEntry>()
    const add = (path: string, type: TreeEntry['type'], mode: number, elf?: ElfInfo): void => {
      entries.set(path, {path, type, mode, uid: 0, gid: 0, nlink: 1, ino: 0, size: 0, elf})
    }
    const elf = (needed: string[], extra: Partial<ElfInfo> = {}): ElfInfo =>
      ({bits: 64, byteOrder: 'le', machine: EM.X86_64, architecture: 'x86-64', type: 'dyn', needed, runpath: [], ...extra})
    for (const dir of ['usr', 'usr/lib', 'usr/lib/foo', 'usr/libexec', 'usr/share', 'usr/share/foo']) add(dir, 'dir', 0o40755)
    // lib<i> needs lib<i+1> within groups of ten, so each helper loads 10 to 20 of them.
    for (let i = 0; i < 100; i++) {
      const next = i % 10 === 9 ? [] : [`lib${i + 1}.so.1`]
      add(`usr/lib/foo/lib${i}.so.1`, 'file', 0o100644, elf([...next, 'libc.so.6'], {runpath: ['$ORIGIN'], runpathTag: 'DT_RUNPATH'}))
    }
    for (let i = 0; i < 1000; i++) {
      add(`usr/libexec/helper${i}`, 'file', 0o100755, elf([`lib${i % 100}.so.1`, `lib${(i * 7) % 100}.so.1`, 'libc.so.6'],
        {interpreter: LOADER, runpath: ['$ORIGIN/../lib/foo'], runpathTag: 'DT_RUNPATH'}))
    }
    for (let i = entries.size; i < 10_000; i++) add(`usr/share/foo/data${i}`, 'file', 0o100644)
    const tree: Tree = {root: '/nonexistent', entries}

    const start = performance.now()
    const findings = executablesRules.check({tree, host, name: undefined, origin: 'path'})
    const elapsed = performance.now() - start
    assert.deepEqual(findings, [])
    assert.ok(elapsed < 200, `took ${elapsed.toFixed(0)} ms`)
  })
})

describe('exec-symbol-version-missing: VERNEED against the VERDEF of the library ld.so picks', () => {
  const glibc = (upTo: number): string[] => ['GLIBC_2.2.5', ...Array.from({length: upTo - 2}, (_, i) => `GLIBC_2.${i + 3}`)]
  const hostWithGlibc = (upTo: number): Record<string, FileSpec> => ({
    ...X86_64_HOST,
    'usr/lib/x86_64-linux-gnu/libc.so.6': {content: buildElf({soname: 'libc.so.6', verdef: glibc(upTo)}), mode: 0o755},
  })
  const needs = (versions: string[], weak: string[] = []): FileSpec => program({verneed: [{file: 'libc.so.6', versions, weak}]})

  it('names the file, the library, the missing version and the newest the host has', () => {
    const findings = check({'usr/libexec/foo': needs(['GLIBC_2.34', 'GLIBC_2.38'])}, hostWithGlibc(36))
    assert.deepEqual(brief(findings), [['exec-symbol-version-missing', 'error', 'usr/libexec/foo']])
    assert.match(findings[0].message, /^usr\/libexec\/foo needs GLIBC_2\.38 from libc\.so\.6; this host's glibc \(\/usr\/lib\/x86_64-linux-gnu\/libc\.so\.6\) provides up to GLIBC_2\.36;/)
    assert.match(findings[0].hint, /older glibc.*link statically.*ID= and VERSION_ID=/)
  })
  it('passes when the host defines every version; weak references do not count', () => {
    assert.deepEqual(check({'usr/libexec/foo': needs(['GLIBC_2.34', 'GLIBC_2.38'])}, hostWithGlibc(38)), [])
    assert.deepEqual(check({'usr/libexec/foo': needs(['GLIBC_2.34'], ['GLIBC_2.39'])}, hostWithGlibc(36)), [])
  })
  it('a library the tree ships is judged by its own VERDEF, and its own needs by the host', () => {
    const tree = {
      'usr/libexec/foo/foo': program({needed: ['libc.so.6', 'libfoo.so.1'], runpath: '$ORIGIN', verneed: [{file: 'libfoo.so.1', versions: ['FOO_2']}]}),
      'usr/libexec/foo/libfoo.so.1': library({soname: 'libfoo.so.1', verdef: ['FOO_1'], verneed: [{file: 'libc.so.6', versions: ['GLIBC_2.39']}]}),
    }
    const f = check(tree, hostWithGlibc(36))
    assert.deepEqual(brief(f), [['exec-symbol-version-missing', 'error', 'usr/libexec/foo/foo'], ['exec-symbol-version-missing', 'error', 'usr/libexec/foo/libfoo.so.1']])
    assert.match(f[0].message, /needs FOO_2 from libfoo\.so\.1; the extension's usr\/libexec\/foo\/libfoo\.so\.1 provides up to FOO_1/)
    assert.match(f[1].message, /needs GLIBC_2\.39 from libc\.so\.6; this host's glibc/)
  })
  it('an unversioned or unreadable host library gets the benefit of the doubt', () => {
    assert.deepEqual(check({'usr/libexec/foo': needs(['GLIBC_2.99'])}), [])
  })
  it('the real /bin/true against this machine\'s own libc passes', () => {
    const trueElf = parseElfFile('/bin/true')
    assert.ok(trueElf.verneed && trueElf.verneed.length > 0)
    const tree = scanTree(makeTree({'usr/libexec/helper': {content: readFileSync('/bin/true'), mode: 0o755}}))
    const findings = executablesRules.check({tree, host: loadHost('/'), name: undefined, origin: 'path'})
    assert.deepEqual(findings.filter((f) => f.rule === 'exec-symbol-version-missing'), [])
  })
})
