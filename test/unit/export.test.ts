/**
 * export: the tarball of an extension tree is what importctl import-tar takes —
 * top-level usr/, root-owned entries, the tree's modes, symlinks as symlinks —
 * read back with tar-stream and with GNU tar. A managed NAME exports its
 * installed tree (the link target in state.json).
 */
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {Writable} from 'node:stream'
import {describe, test} from 'node:test'
import {extract} from 'tar-stream'
import {HelperError} from '../../src/errors.js'
import {exportExtension, planExport, resolveExportSource} from '../../src/lifecycle/export.js'
import {DEFAULT_PATHS, type Paths} from '../../src/lifecycle/state.js'
import {makeTree} from '../lib/fixtures.js'

const NAME = 'org.example.App'
const tree = makeTree({
  [`usr/lib/extension-release.d/extension-release.${NAME}`]: {content: 'ID=_any\n', mode: 0o644},
  'usr/libexec/org.example.App/helper': {content: '#!/bin/sh\necho hi\n', mode: 0o755},
  'usr/share/dbus-1/system-services/org.example.App.service': {content: '[D-BUS Service]\nName=org.example.App\n', mode: 0o644},
  'usr/share/org.example.App/private': {content: 'secret', mode: 0o600},
  'usr/lib/systemd/system/multi-user.target.wants/org.example.App.service': {symlink: '../org.example.App.service'},
  'usr/lib/systemd/system/org.example.App.service': {content: '[Service]\nExecStart=/usr/libexec/org.example.App/helper\n', mode: 0o644},
  'usr/share/empty': {dir: true, mode: 0o750},
})

const scratch = mkdtempSync(join(tmpdir(), 'sysext-export-test-'))
process.once('exit', () => rmSync(scratch, {recursive: true, force: true}))

interface Read {
  name: string
  type: string
  mode: number
  uid: number
  gid: number
  uname?: string
  gname?: string
  linkname?: string | null
  body: string
}

async function readTar(file: string): Promise<Read[]> {
  const entries: Read[] = []
  const ex = extract()
  ex.on('entry', (h, stream, next) => {
    const chunks: Buffer[] = []
    stream.on('data', (c: unknown) => chunks.push(c as Buffer))
    stream.on('end', () => {
      entries.push({name: h.name, type: h.type ?? '', mode: h.mode ?? -1, uid: h.uid ?? -1, gid: h.gid ?? -1, uname: h.uname, gname: h.gname, linkname: h.linkname, body: Buffer.concat(chunks).toString()})
      next()
    })
    stream.resume()
  })
  const done = new Promise<void>((resolve, reject) => {
    ex.on('finish', resolve)
    ex.on('error', reject)
  })
  createReadStream(file).pipe(ex)
  await done
  return entries
}

describe('export --format tar', () => {
  const out = join(scratch, 'app.tar')
  let entries: Read[]

  test('writes a tarball of the tree and reports what it wrote', async () => {
    const r = await exportExtension(tree, {output: out})
    assert.equal(r.output, out)
    assert.equal(r.source.kind, 'path')
    assert.equal(r.source.tree, tree)
    entries = await readTar(out)
    assert.equal(r.entries, entries.length)
    assert.equal(r.bytes, readFileSync(out).length)
  })

  test('top-level entries are usr/..., parents before children, sorted', () => {
    assert.equal(entries[0]!.name, 'usr/')
    for (const e of entries) assert.match(e.name, /^usr\//)
    const names = entries.map((e) => e.name)
    for (const [i, n] of names.entries()) {
      const parent = n.replace(/[^/]+\/?$/, '')
      if (parent) assert.ok(names.indexOf(parent) < i, `${parent} comes before ${n}`)
    }
  })

  test('every entry is owned by root (0:0, root/root)', () => {
    for (const e of entries) {
      assert.equal(e.uid, 0, e.name)
      assert.equal(e.gid, 0, e.name)
      assert.equal(e.uname, 'root', e.name)
      assert.equal(e.gname, 'root', e.name)
    }
  })

  test('modes and contents are the tree\'s; symlinks stay symlinks', () => {
    const by = new Map(entries.map((e) => [e.name, e]))
    assert.equal(by.get('usr/libexec/org.example.App/helper')!.mode, 0o755)
    assert.equal(by.get('usr/libexec/org.example.App/helper')!.body, '#!/bin/sh\necho hi\n')
    assert.equal(by.get('usr/share/org.example.App/private')!.mode, 0o600)
    assert.equal(by.get(`usr/lib/extension-release.d/extension-release.${NAME}`)!.mode, 0o644)
    assert.equal(by.get('usr/share/empty/')!.type, 'directory')
    assert.equal(by.get('usr/share/empty/')!.mode, 0o750)
    const link = by.get('usr/lib/systemd/system/multi-user.target.wants/org.example.App.service')!
    assert.equal(link.type, 'symlink')
    assert.equal(link.linkname, '../org.example.App.service')
  })

  test('GNU tar reads it: same names, root/root owners, modes, symlink target', () => {
    const r = spawnSync('tar', ['-tvf', out, '--numeric-owner'], {encoding: 'utf8'})
    assert.equal(r.status, 0, r.stderr)
    const lines = r.stdout.trim().split('\n')
    assert.equal(lines.length, entries.length)
    assert.ok(lines.every((l) => /^\S+ 0\/0 /.test(l)), r.stdout)
    assert.match(r.stdout, /^-rwxr-xr-x 0\/0 .* usr\/libexec\/org\.example\.App\/helper$/m)
    assert.match(r.stdout, /^-rw------- 0\/0 .* usr\/share\/org\.example\.App\/private$/m)
    assert.match(r.stdout, /^drwxr-x--- 0\/0 .* usr\/share\/empty\/$/m)
    assert.match(r.stdout, /^lrwxrwxrwx 0\/0 .* usr\/lib\/systemd\/system\/multi-user\.target\.wants\/org\.example\.App\.service -> \.\.\/org\.example\.App\.service$/m)
    const names = spawnSync('tar', ['-tvf', out], {encoding: 'utf8'})
    assert.ok(names.stdout.trim().split('\n').every((l) => /^\S+ root\/root /.test(l)), names.stdout)
  })

  test('GNU tar extracts it back to the same tree', () => {
    const dest = join(scratch, 'extracted')
    mkdirSync(dest)
    const x = spawnSync('tar', ['-xf', out, '-C', dest], {encoding: 'utf8'})
    assert.equal(x.status, 0, x.stderr)
    const diff = spawnSync('diff', ['-r', '--no-dereference', tree, dest], {encoding: 'utf8'})
    assert.equal(diff.status, 0, diff.stdout + diff.stderr)
  })

  test('the same tree gives the same bytes', async () => {
    const again = join(scratch, 'again.tar')
    await exportExtension(tree, {output: again})
    assert.deepEqual(readFileSync(again), readFileSync(out))
  })

  test("--output - writes the tarball to the given stdout stream", async () => {
    const chunks: Buffer[] = []
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        chunks.push(chunk)
        cb()
      },
    })
    const r = await exportExtension(tree, {output: '-', stdout: sink})
    assert.equal(r.output, '-')
    assert.deepEqual(Buffer.concat(chunks), readFileSync(out))
  })
})

describe('export source: NAME or PATH', () => {
  const stateDir = join(scratch, 'state')
  const paths: Paths = {...DEFAULT_PATHS, stateDir, lockFile: join(scratch, 'lock'), targets: {persistent: join(scratch, 'etc'), runtime: join(scratch, 'run'), local: join(scratch, 'var')}}
  mkdirSync(stateDir, {recursive: true})
  writeFileSync(join(stateDir, 'state.json'), JSON.stringify({
    version: 1,
    pending: {},
    // A complete record: state.json is schema-checked on every read.
    extensions: {[NAME]: {name: NAME, source: {kind: 'path', path: '/elsewhere'}, target: 'local', link: join(paths.targets.local, NAME), linkTarget: tree,
      releaseGenerated: false, hash: 'h', installedAt: 'now', busNames: [], units: [], polkitActions: [], touchesPolkit: false, reloadManager: false}},
  }))

  test('a managed NAME exports the link target recorded in state.json', async () => {
    assert.deepEqual(resolveExportSource(NAME, paths), {name: NAME, kind: 'managed', tree})
    const r = await exportExtension(NAME, {paths, output: join(scratch, 'named.tar')})
    assert.equal(r.name, NAME)
    assert.equal(r.source.kind, 'managed')
    assert.equal(r.entries, planExport(tree).length)
  })

  test("a PATH exports that tree, named after its release file, else its directory", () => {
    assert.deepEqual(resolveExportSource(tree, paths), {name: NAME, kind: 'path', tree})
    const bare = makeTree({'usr/share/x': 'x'})
    assert.deepEqual(resolveExportSource(bare, paths), {name: bare.split('/').pop(), kind: 'path', tree: bare})
  })

  test('a reader that goes away (EPIPE on --output -) is EXPORT_WRITE_FAILED, not a crash', async () => {
    const closed = new Writable({
      write(_chunk, _enc, cb) {
        cb(Object.assign(new Error('write EPIPE'), {code: 'EPIPE'}))
      },
    })
    await assert.rejects(exportExtension(tree, {output: '-', stdout: closed}), (e: unknown) => e instanceof HelperError && e.code === 'EXPORT_WRITE_FAILED' && /closed the pipe/.test(e.message))
  })

  test('an unknown NAME is EXPORT_NOT_FOUND; a missing PATH is TREE_NOT_FOUND', () => {
    assert.throws(() => resolveExportSource('org.example.Unknown', paths), (e: unknown) => e instanceof HelperError && e.code === 'EXPORT_NOT_FOUND' && !!e.hint)
    assert.throws(() => resolveExportSource('/nonexistent/tree', paths), (e: unknown) => e instanceof HelperError && e.code === 'TREE_NOT_FOUND')
  })

  test('a directory without usr/ or opt/ is refused', async () => {
    const notATree = makeTree({'etc/x.conf': 'x'})
    await assert.rejects(exportExtension(notATree, {output: join(scratch, 'x.tar')}), (e: unknown) => e instanceof HelperError && e.code === 'TREE_NOT_FOUND')
  })

  test('a FIFO in the tree is refused, naming it', () => {
    const withFifo = makeTree({'usr/share/x': 'x', 'usr/share/pipe': {fifo: true}})
    assert.throws(() => planExport(withFifo), (e: unknown) => e instanceof HelperError && e.code === 'EXPORT_UNSUPPORTED_FILE' && e.message.includes('usr/share/pipe'))
  })
})
