/**
 * The one read of a source tree (tree-copy): who reads it, what is copied, what is
 * refused. Runs as any user; the privilege-drop cases run only as root.
 */
import assert from 'node:assert/strict'
import {chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {execFileSync} from 'node:child_process'
import {after, describe, test} from 'node:test'
import {HelperError} from '../../src/errors.js'
import {copyTree, inspectSource} from '../../src/sysext/tree-copy.js'
import {scanTree} from '../../src/sysext/tree.js'
import {validateTree} from '../../src/sysext/validate.js'

const scratch = mkdtempSync(join(tmpdir(), 'sysext-tree-copy-'))
chmodSync(scratch, 0o755)
after(() => rmSync(scratch, {recursive: true, force: true}))
const isRoot = process.getuid?.() === 0
let n = 0

function tree(files: Record<string, string>): string {
  const root = join(scratch, `t${n++}`)
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(join(root, rel, '..'), {recursive: true})
    if (content.startsWith('->')) symlinkSync(content.slice(2), join(root, rel))
    else writeFileSync(join(root, rel), content)
  }
  return root
}

describe('copyTree', () => {
  test('copies usr/ and opt/ only: files, modes, symlinks as links; the copy is 0755 with our files', async () => {
    const src = tree({'usr/share/a/f': 'data', 'usr/share/a/l': '->/etc/shadow', 'opt/x/y': 'y', 'etc/ignored': 'no', 'top': 'no'})
    chmodSync(join(src, 'usr/share/a/f'), 0o640)
    const out = join(scratch, `out${n++}`)
    const r = await copyTree(src, out)
    assert.equal(readFileSync(join(out, 'usr/share/a/f'), 'utf8'), 'data')
    assert.equal(statSync(join(out, 'usr/share/a/f')).mode & 0o7777, 0o640)
    assert.equal(readlinkSync(join(out, 'usr/share/a/l')), '/etc/shadow')
    assert.ok(lstatSync(join(out, 'usr/share/a/l')).isSymbolicLink())
    assert.equal(readFileSync(join(out, 'opt/x/y'), 'utf8'), 'y')
    assert.equal(existsSync(join(out, 'etc')), false)
    assert.equal(existsSync(join(out, 'top')), false)
    assert.equal(statSync(out).mode & 0o777, 0o755)
    assert.equal(r.linked, 0, 'install copies never share an inode with the source')
    assert.notEqual(statSync(join(out, 'usr/share/a/f')).ino, statSync(join(src, 'usr/share/a/f')).ino)
    assert.equal(r.owners.get('usr/share/a/f')?.uid, process.getuid?.())
  })

  test('a copy never carries setuid/setgid on files; the rules still judge the source\'s bits and owners', async () => {
    const src = tree({'usr/bin/x': '#!/bin/sh\n', 'usr/share/y': 'y'})
    chmodSync(join(src, 'usr/bin/x'), 0o4755)
    const out = join(scratch, `out${n++}`)
    const r = await copyTree(src, out)
    assert.equal(statSync(join(out, 'usr/bin/x')).mode & 0o7777, 0o755)
    assert.equal(r.owners.get('usr/bin/x')?.mode, 0o4755)
    const validated = validateTree(scanTree(out), {path: src, origin: 'path'}, {name: 'x.ext'}, r.owners)
    assert.ok(validated.report.findings.some((f) => f.rule === 'file-setuid' && f.file === 'usr/bin/x'), JSON.stringify(validated.report.findings.map((f) => f.rule)))
  })

  test('hardLinks (release --output): files of a trusted tree are linked', async () => {
    const src = tree({'usr/share/a/f': 'data'})
    const out = join(scratch, `out${n++}`)
    const r = await copyTree(src, out, undefined, {hardLinks: true})
    assert.equal(r.linked, 1)
    assert.equal(statSync(join(out, 'usr/share/a/f')).ino, statSync(join(src, 'usr/share/a/f')).ino)
  })

  test('a FIFO is refused at the stage step and the partial copy is removed', async () => {
    const src = tree({'usr/share/a/f': 'data'})
    execFileSync('mkfifo', [join(src, 'usr/share/a/fifo')])
    const out = join(scratch, `out${n++}`)
    await assert.rejects(copyTree(src, out), (e: unknown) => e instanceof HelperError && e.code === 'STAGE_SOURCE_UNREADABLE' && e.step === 'stage' && /fifo: not a directory, regular file or symlink/.test(e.message))
    assert.equal(existsSync(out), false)
  })

  test('a destination that cannot be created is STAGE_FAILED naming it', async () => {
    const src = tree({'usr/share/a/f': 'data'})
    await assert.rejects(copyTree(src, join(scratch, 'missing-parent', 'out')), (e: unknown) => e instanceof HelperError && e.code === 'STAGE_FAILED' && !!e.file?.endsWith('out'))
  })
})

describe('inspectSource', () => {
  test('our own tree under root-owned, non-writable ancestors is trusted and read as us', () => {
    const src = tree({'usr/share/a/f': 'data'})
    const t = inspectSource(src)
    assert.equal(t.trusted, true, t.reasons.join('; '))
    assert.equal(t.reader.uid, process.getuid?.())
  })

  test('a directory writable by others makes it untrusted', () => {
    const src = tree({'usr/share/a/f': 'data'})
    chmodSync(join(src, 'usr/share'), 0o777)
    const t = inspectSource(src)
    assert.equal(t.trusted, false)
    assert.match(t.reasons.join(';'), /usr\/share in the tree is writable by others/)
  })

  test('as root: a user-owned tree is read as that user (who cannot read root-only files)', {skip: !isRoot && 'needs root'}, async () => {
    const src = tree({'usr/share/a/f': 'data'})
    execFileSync('chown', ['-R', '65533:65533', src])
    const t = inspectSource(src)
    assert.equal(t.trusted, false)
    assert.deepEqual(t.reader, {uid: 65533, gid: 65533})
    assert.equal(t.allRoot, false)
    const out = join(scratch, `out${n++}`)
    const r = await copyTree(src, out, t)
    assert.equal(r.copied, 1)
    assert.equal(statSync(join(out, 'usr/share/a/f')).uid, 0, 'the copy is root-owned')
    assert.equal(r.owners.get('usr/share/a/f')?.uid, 65533, 'the rules still see who owned it')
    // A hard link to a root-only file inside the user's tree: the reader (the user) cannot open it.
    const secret = join(scratch, `secret${n++}`)
    writeFileSync(secret, 'root only')
    chmodSync(secret, 0o600)
    const src2 = tree({'usr/share/a/f': 'data'})
    execFileSync('ln', [secret, join(src2, 'usr/share/a/s')])
    chownSync(join(src2, 'usr/share/a'), 65533, 65533)
    execFileSync('chown', ['65533:65533', src2, join(src2, 'usr'), join(src2, 'usr/share')])
    await assert.rejects(copyTree(src2, join(scratch, `out${n++}`)), (e: unknown) => e instanceof HelperError && e.code === 'STAGE_SOURCE_UNREADABLE' && /read as uid 65533/.test(e.message))
  })
})
