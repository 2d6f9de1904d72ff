/**
 * The one way an extension tree is copied: what install stages and what
 * `release --output` writes. Only usr/ and opt/ are copied (nothing else reaches
 * the host).
 *
 * The source is read once, by a child process that never has more privilege than
 * the tree's owner (it runs as that uid/gid with no supplementary groups when the
 * tree, an ancestor or a directory inside is not ours or writable by others), that
 * never follows a symlink (lstat; files opened O_NOFOLLOW and checked with fstat),
 * and that streams what it read as a tar. This process extracts the stream into a
 * fresh directory, checking every name (relative, no `..`, under usr/ or opt/, its
 * parent a directory extracted before it, nothing written twice or through a
 * symlink), refusing anything but directories, regular files and symlinks, and
 * chowning everything to root. The copy is then what gets scanned, hashed,
 * validated and merged: a swap in the source after the read changes nothing.
 */
import {spawn} from 'node:child_process'
import {chmodSync, closeSync, constants, fchmodSync, fchownSync, fstatSync, lchownSync, linkSync, lstatSync, mkdirSync, openSync, readSync, readdirSync, realpathSync, rmSync, symlinkSync, writeSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {extract as tarExtract} from 'tar-stream'
import {HelperError, fsError} from '../errors.js'
import {MERGED_DIRS} from './tree.js'

export interface StageResult {
  linked: number
  copied: number
}

/**
 * An entry as the source had it: owner, permission bits (the copy never carries
 * setuid/setgid on files), link count and inode (the copy is root-owned, nlink 1).
 */
export interface SourceOwner {
  uid: number
  gid: number
  mode: number
  nlink: number
  ino: number
}

/** Files in a copy are root-owned: they never get the setuid/setgid bits (the rules judge the source's). */
const NO_SETID = ~0o6000

/** Who may read a source tree, and whether anybody but us (or root) could change it. */
export interface SourceTrust {
  /** Nobody but root and us can change the tree or swap any directory above or inside it. */
  trusted: boolean
  /** Additionally every entry is owned by root: the tree can be used in place. */
  allRoot: boolean
  /** The identity the reader runs as. */
  reader: {uid: number; gid: number}
  /** Why the tree is not trusted (for the install's stage reasons). */
  reasons: string[]
}

const NOBODY = 65534

/**
 * lstat-only walk (no content is read, no symlink followed): the tree's
 * ancestors and directories decide who reads it. A directory not owned by root
 * or us, or group/world-writable (ancestors: unless sticky), makes the tree
 * untrusted; it is then read as its (single) non-root owner, else as nobody.
 */
export function inspectSource(root: string, self = process.getuid?.() ?? 0): SourceTrust {
  const reasons: string[] = []
  const owners = new Map<number, number>()
  let allRoot = true
  const ok = (uid: number): boolean => uid === 0 || uid === self
  let real: string
  try {
    real = realpathSync(root)
  } catch (error) {
    throw fsError('TREE_NOT_FOUND', 'Cannot read extension tree', root, error,
      'Pass the directory that holds usr/ (for a Flatpak app: files/lib/extensions), or an installed app id.')
  }
  for (let dir = dirname(real); ; dir = dirname(dir)) {
    const st = lstatSync(dir)
    if (!ok(st.uid)) {
      reasons.push(`${dir} is owned by uid ${st.uid}`)
      owners.set(st.uid, st.gid)
    }
    if (st.mode & 0o022 && !(st.mode & 0o1000)) reasons.push(`${dir} is writable by others (mode ${(st.mode & 0o7777).toString(8)})`)
    if (dir === '/') break
  }
  const walk = (abs: string, rel: string, depth: number): void => {
    let st
    try {
      st = lstatSync(abs)
    } catch {
      return // the reader reports it
    }
    if (st.uid !== 0) allRoot = false
    if (!st.isDirectory()) return
    if (!ok(st.uid)) {
      if (reasons.length < 8) reasons.push(`${rel || '.'} in the tree is owned by uid ${st.uid}`)
      owners.set(st.uid, st.gid)
    }
    if (st.mode & 0o022) reasons.push(`${rel || '.'} in the tree is writable by others (mode ${(st.mode & 0o7777).toString(8)})`)
    let names: string[]
    try {
      names = readdirSync(abs)
    } catch {
      return
    }
    for (const name of names) {
      if (depth === 0 && !MERGED_DIRS.includes(name)) continue
      walk(join(abs, name), rel ? `${rel}/${name}` : name, depth + 1)
    }
  }
  walk(real, '', 0)
  const trusted = reasons.length === 0
  let reader = {uid: self, gid: process.getgid?.() ?? 0}
  if (!trusted && self === 0) {
    const [only] = owners.size === 1 ? [...owners] : []
    reader = only ? {uid: only[0], gid: only[1]} : {uid: NOBODY, gid: NOBODY}
  }
  return {trusted, allRoot: trusted && allRoot, reader, reasons: [...new Set(reasons)]}
}

/**
 * The reader, run as `node -e READER -- ROOT MODE` (core modules only, so it also
 * works from the self-contained bundle). Writes a POSIX tar (pax headers for long
 * names and for the source's uid, gid, nlink, ino, dev) of ROOT's usr/ and opt/ to
 * stdout. MODE "link": regular files owned by the reader's uid are sent without
 * content, for the extractor to hard-link. Exits 3 with a message on stderr for
 * anything it must not or cannot copy.
 */
const READER = String.raw`
'use strict'
const fs = require('fs')
const root = process.argv[1]
const linkMode = process.argv[2] === 'link'
const me = process.getuid()
const TOP = ['usr', 'opt']
function fail(msg) { process.stderr.write(msg + '\n'); process.exit(3) }
function out(buf) {
  let off = 0
  while (off < buf.length) {
    try { off += fs.writeSync(1, buf, off, buf.length - off) } catch (e) { if (e.code !== 'EAGAIN') { if (e.code === 'EPIPE') process.exit(4); throw e } }
  }
}
function pad(size) { const r = size % 512; if (r) out(Buffer.alloc(512 - r)) }
function paxRecords(obj) {
  let s = ''
  for (const k of Object.keys(obj)) {
    const body = ' ' + k + '=' + obj[k] + '\n'
    const blen = Buffer.byteLength(body)
    let len = blen + 1
    while (String(len).length + blen !== len) len++
    s += len + body
  }
  return Buffer.from(s, 'utf8')
}
function header(name, type, mode, size, mtime, uid, gid, linkname) {
  const b = Buffer.alloc(512)
  const str = (v, off, len) => b.write(v, off, Math.min(Buffer.byteLength(v), len), 'utf8')
  const oct = (v, off, len) => b.write(Math.min(v, 8 ** (len - 1) - 1).toString(8).padStart(len - 1, '0') + '\0', off, len, 'ascii')
  str(name.slice(0, 99), 0, 100)
  oct(mode & 0o7777, 100, 8); oct(uid, 108, 8); oct(gid, 116, 8); oct(size, 124, 12); oct(Math.floor(mtime), 136, 12)
  b.write('        ', 148, 8, 'ascii')
  b.write(type, 156, 1, 'ascii')
  if (linkname) str(linkname.slice(0, 99), 157, 100)
  b.write('ustar\0', 257, 6, 'ascii'); b.write('00', 263, 2, 'ascii')
  let sum = 0
  for (const x of b) sum += x
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii')
  return b
}
function entry(name, type, st, size, linkname, extra) {
  const pax = Object.assign({path: name, 'SYSEXT.uid': st.uid, 'SYSEXT.gid': st.gid, 'SYSEXT.nlink': st.nlink, 'SYSEXT.ino': st.ino, 'SYSEXT.dev': st.dev}, extra)
  if (linkname !== undefined) pax.linkpath = linkname
  const body = paxRecords(pax)
  out(header('PaxHeader', 'x', 0o644, body.length, 0, 0, 0)); out(body); pad(body.length)
  out(header(name, type, st.mode, size, st.mtimeMs / 1000, st.uid, st.gid, linkname))
}
function walk(rel) {
  const abs = rel ? root + '/' + rel : root
  let names
  try { names = fs.readdirSync(abs) } catch (e) { fail((rel || '.') + ': cannot list: ' + e.code) }
  names.sort()
  for (const n of names) {
    if (!rel && !TOP.includes(n)) continue
    const r = rel ? rel + '/' + n : n
    const p = abs + '/' + n
    let st
    try { st = fs.lstatSync(p) } catch (e) { fail(r + ': ' + e.code) }
    if (st.isDirectory()) { entry(r, '5', st, 0); walk(r) }
    else if (st.isSymbolicLink()) {
      let t
      try { t = fs.readlinkSync(p) } catch (e) { fail(r + ': ' + e.code) }
      entry(r, '2', st, 0, t)
    } else if (st.isFile()) {
      if (linkMode && st.uid === me) { entry(r, '0', st, 0, undefined, {'SYSEXT.link': '1'}); continue }
      let fd
      try { fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY) } catch (e) { fail(r + ': cannot open without following links: ' + e.code) }
      const fst = fs.fstatSync(fd)
      if (!fst.isFile()) fail(r + ': changed while being read (no longer a regular file)')
      entry(r, '0', fst, fst.size)
      const buf = Buffer.alloc(Math.min(1 << 20, Math.max(fst.size, 1)))
      let left = fst.size
      while (left > 0) {
        const n = fs.readSync(fd, buf, 0, Math.min(buf.length, left), null)
        if (n === 0) fail(r + ': changed while being read (shorter than its size)')
        out(n === buf.length ? buf : buf.subarray(0, n))
        left -= n
      }
      pad(fst.size)
      fs.closeSync(fd)
    } else fail(r + ': not a directory, regular file or symlink (device, FIFO or socket); it cannot be copied')
  }
}
walk('')
out(Buffer.alloc(1024))
`

function validName(name: string): boolean {
  if (name.startsWith('/') || name.includes('\0')) return false
  const parts = name.split('/')
  if (!MERGED_DIRS.includes(parts[0])) return false
  return parts.every((p) => p !== '' && p !== '.' && p !== '..')
}

function writeFailure(error: unknown, dest: string, what: string): HelperError {
  if (error instanceof HelperError) return error
  return fsError('STAGE_FAILED', what, dest, error, stageHint((error as NodeJS.ErrnoException)?.code, dest))
}

/** What to do about a failed write into a stage or an --output copy. */
export function stageHint(errno: string | undefined, path: string): string {
  if (errno === 'ENOSPC' || errno === 'EDQUOT')
    return `Free space on the filesystem holding ${dirname(path)} (df -h ${dirname(path)}), then run the command again; nothing was merged.`
  if (errno === 'EROFS') return `${dirname(path)} is on a read-only filesystem: remount it read-write (or point the state directory at a writable one), then run the command again; nothing was merged.`
  return `Check that ${dirname(path)} is a writable directory on a local filesystem, then run the command again; nothing was merged.`
}

/**
 * Copies the usr/ and opt/ parts of `source` into `dest` (created here; its
 * parent must exist). `trust` (from inspectSource) picks the reader's identity.
 * With `hardLinks` (release --output only: install's stage must not share an inode
 * with a source its owner can still write in place), files of a trusted tree owned
 * by us are hard-linked, checked to be the inode the reader saw. Throws HelperError (step 'stage') and removes
 * `dest` on any failure.
 */
export async function copyTree(source: string, dest: string, trust: SourceTrust = inspectSource(source), options: {hardLinks?: boolean} = {}): Promise<StageResult & {owners: Map<string, SourceOwner>}> {
  const self = process.getuid?.() ?? 0
  const asRoot = self === 0
  try {
    mkdirSync(dest, {mode: 0o700})
  } catch (error) {
    throw writeFailure(error, dest, 'Cannot create the staged copy')
  }
  const result = {linked: 0, copied: 0, owners: new Map<string, SourceOwner>()}
  const dirs = new Set<string>([''])
  const dirModes: Array<[string, number]> = []
  const sameUser = trust.reader.uid === self
  const child = spawn(process.execPath, ['-e', READER, '--', realpathSync(source), options.hardLinks && trust.trusted && sameUser ? 'link' : 'copy'], {
    cwd: '/',
    env: {PATH: '/usr/bin:/bin', LC_ALL: 'C'},
    stdio: ['ignore', 'pipe', 'pipe'],
    // libuv drops the supplementary groups (setgroups(0)) before setgid/setuid.
    ...(sameUser ? {} : {uid: trust.reader.uid, gid: trust.reader.gid}),
  })
  const stderr: Buffer[] = []
  child.stderr.on('data', (b: Buffer) => stderr.push(b))
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
  child.on('error', () => {})
  const ex = tarExtract()
  child.stdout.pipe(ex as unknown as NodeJS.WritableStream)
  const refuse = (message: string): HelperError =>
    new HelperError('STAGE_REFUSED', `Cannot stage ${source}: ${message}.`, {step: 'stage', file: source, hint: 'Fix the tree (only directories, regular files and symlinks under usr/ and opt/), then run the command again.'})
  let failure: HelperError | undefined
  try {
    for await (const e of ex) {
      const h = e.header
      const name = h.name.replace(/\/+$/, '')
      if (!validName(name)) throw refuse(`the reader sent an entry named '${name}'`)
      const parent = name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : ''
      if (!dirs.has(parent)) throw refuse(`'${name}' does not sit in a directory copied before it`)
      const to = join(dest, name)
      const pax = (h.pax ?? {}) as Record<string, string>
      const mode = (h.mode ?? 0) & 0o7777
      result.owners.set(name, {uid: Number(pax['SYSEXT.uid'] ?? h.uid), gid: Number(pax['SYSEXT.gid'] ?? h.gid), mode, nlink: Number(pax['SYSEXT.nlink'] ?? 1), ino: Number(pax['SYSEXT.ino'] ?? 0)})
      try {
        if (h.type === 'directory') {
          mkdirSync(to, {mode: 0o700})
          dirs.add(name)
          dirModes.push([to, mode])
          e.resume()
        } else if (h.type === 'symlink') {
          symlinkSync(h.linkname ?? '', to)
          if (asRoot) lchownSync(to, 0, 0)
          e.resume()
        } else if (h.type === 'file') {
          if (pax['SYSEXT.link'] === '1') {
            e.resume()
            const from = join(source, name)
            let linked = false
            try {
              linkSync(from, to)
              linked = true
            } catch (error) {
              const code = (error as NodeJS.ErrnoException).code
              if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw error
            }
            if (linked) {
              const st = lstatSync(to)
              if (!st.isFile() || String(st.ino) !== pax['SYSEXT.ino'] || st.uid !== self) throw refuse(`${name} changed while it was copied`)
              result.linked++
            } else {
              copyVerified(from, to, pax['SYSEXT.ino'], mode, asRoot)
              result.copied++
            }
            continue
          }
          const fd = openSync(to, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
          try {
            for await (const chunk of e) {
              const buf = chunk as Buffer
              let off = 0
              while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off)
            }
            if (asRoot) fchownSync(fd, 0, 0)
            fchmodSync(fd, mode & NO_SETID)
          } finally {
            closeSync(fd)
          }
          result.copied++
        } else {
          throw refuse(`${name} is a ${h.type} entry`)
        }
      } catch (error) {
        throw writeFailure(error, to, 'Cannot write the staged copy')
      }
    }
    const code = await exited
    const message = Buffer.concat(stderr).toString('utf8').trim()
    if (code !== 0)
      throw new HelperError('STAGE_SOURCE_UNREADABLE', `Cannot copy ${source} (read as uid ${trust.reader.uid}): ${message || `the reader exited with ${code}`}.`, {
        step: 'stage', file: source,
        hint: 'The tree changed while it was read, or holds something that cannot be copied (see above). Make sure nothing modifies it, then run the command again.',
      })
    // Modes last (a 0555 directory would refuse our own writes otherwise); root-owned.
    for (const [dir, mode] of dirModes.reverse()) {
      if (asRoot) lchownSync(dir, 0, 0)
      chmodSync(dir, mode)
    }
    if (asRoot) lchownSync(dest, 0, 0)
    chmodSync(dest, 0o755)
    return result
  } catch (error) {
    failure = error instanceof HelperError ? error : writeFailure(error, dest, 'Cannot write the staged copy')
    throw failure
  } finally {
    if (failure) {
      child.kill('SIGKILL')
      ex.destroy()
      await exited.catch(() => null)
      rmSync(dest, {recursive: true, force: true})
    }
  }
}

/** Copy of a file the (trusted) reader saw, re-opened without following links and checked to be the same inode. */
function copyVerified(from: string, to: string, ino: string | undefined, mode: number, asRoot: boolean): void {
  const src = openSync(from, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  try {
    const st = fstatSync(src)
    if (!st.isFile() || String(st.ino) !== ino) throw new HelperError('STAGE_REFUSED', `${from} changed while it was copied.`, {step: 'stage', file: from, hint: 'Make sure nothing modifies the tree, then run the command again.'})
    const dst = openSync(to, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
    try {
      const buf = Buffer.alloc(1 << 20)
      for (;;) {
        const n = readSync(src, buf, 0, buf.length, null)
        if (n === 0) break
        let off = 0
        while (off < n) off += writeSync(dst, buf, off, n - off)
      }
      if (asRoot) fchownSync(dst, 0, 0)
      fchmodSync(dst, mode & NO_SETID)
    } finally {
      closeSync(dst)
    }
  } finally {
    closeSync(src)
  }
}
