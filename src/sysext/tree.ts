/**
 * Scanning an extension tree: the only place validation touches the filesystem
 * of the tree. Everything the rules need is read here, once, so the rules stay
 * pure functions over the returned Tree.
 */
import {closeSync, constants, fstatSync, lstatSync, openSync, readSync, readdirSync, readFileSync, readlinkSync, statSync} from 'node:fs'
import {join} from 'node:path'
import {HelperError, fsError} from '../errors.js'
import {type ElfInfo, fdReader, parseElf} from '../formats/elf.js'
import {readReleaseExtras} from './tree-release.js'

export type EntryType = 'file' | 'dir' | 'symlink' | 'other'

export interface TreeEntry {
  /** Path relative to the tree root, '/'-separated, no leading slash. */
  path: string
  type: EntryType
  /** Full st_mode (type and permission bits). */
  mode: number
  uid: number
  gid: number
  nlink: number
  ino: number
  size: number
  /** Symlink target, as stored. */
  linkTarget?: string
  /** Text of configuration files the rules parse (see TEXT_DIRS). */
  text?: string
  /** Parsed ELF headers of ELF files that are executable or shared objects. */
  elf?: ElfInfo
  /** The `#!` line of executable scripts, without the `#!`. */
  shebang?: string
  /** Set when the entry could not be read (e.g. EACCES); the rules report it. */
  readError?: string
  /** Release files (and what release-file symlinks lead to): the bytes, for systemd's UTF-8 rules. */
  raw?: Buffer
  /** Release files: user.extension-release.strict (null: not set); undefined when it could not be read. */
  strictXattr?: string | null
  /** Release-file symlinks: where they lead inside the image (chased as systemd does, `..` and `/` clamped to the image root). */
  chased?: {path: string; type: EntryType | 'missing'; raw?: Buffer}
}

export interface Tree {
  /** Absolute path of the tree root (the directory holding usr/). */
  root: string
  entries: Map<string, TreeEntry>
}

/** Directories whose regular files are read as text for the rules. */
export const TEXT_DIRS = [
  'usr/lib/extension-release.d',
  'usr/share/dbus-1/system-services',
  'usr/share/dbus-1/system.d',
  'usr/share/polkit-1/actions',
  'usr/lib/systemd/system',
  'usr/lib/sysusers.d',
]
const MAX_TEXT = 1024 * 1024

function entryType(st: {isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean}): EntryType {
  if (st.isSymbolicLink()) return 'symlink'
  if (st.isFile()) return 'file'
  if (st.isDirectory()) return 'dir'
  return 'other'
}

function isTextPath(rel: string): boolean {
  const slash = rel.lastIndexOf('/')
  return slash > 0 && TEXT_DIRS.includes(rel.slice(0, slash))
}

/**
 * Opens a file the walk saw as a regular file without following a symlink that
 * replaced it since, and checks it still is one (ELOOP / ENOTREG are read errors).
 */
function openNoFollow(abs: string): number {
  const fd = openSync(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY)
  if (!fstatSync(fd).isFile()) {
    closeSync(fd)
    throw Object.assign(new Error(`${abs} changed while it was read`), {code: 'ENOTREG'})
  }
  return fd
}

/** ELF or script header of a regular file that may be executed or loaded. */
function readHeader(abs: string, entry: TreeEntry): void {
  const executable = (entry.mode & 0o111) !== 0
  const sharedObject = /\.so(\.|$)/.test(entry.path)
  if (!executable && !sharedObject) return
  let fd: number
  try {
    fd = openNoFollow(abs)
  } catch (error) {
    entry.readError = (error as NodeJS.ErrnoException).code ?? String(error)
    return
  }
  try {
    const head = Buffer.alloc(Math.min(256, entry.size))
    readSync(fd, head, 0, head.length, 0)
    if (head.length >= 4 && head.readUInt32BE(0) === 0x7f454c46) {
      entry.elf = parseElf(fdReader(fd))
    } else if (executable && head.length >= 2 && head[0] === 0x23 && head[1] === 0x21) {
      const end = head.indexOf(0x0a)
      entry.shebang = head.subarray(2, end === -1 ? head.length : end).toString('utf8').trim()
    }
  } catch (error) {
    entry.readError = (error as NodeJS.ErrnoException).code ?? String(error)
  } finally {
    closeSync(fd)
  }
}

/** Throws TREE_NOT_FOUND / TREE_NOT_DIRECTORY unless `root` is a directory. */
export function assertTreeRoot(root: string): void {
  let st
  try {
    st = statSync(root)
  } catch (error) {
    throw fsError('TREE_NOT_FOUND', 'Cannot read extension tree', root, error,
      'Pass the directory that holds usr/ (for a Flatpak app: files/lib/extensions), or an installed app id.')
  }
  if (!st.isDirectory())
    throw new HelperError('TREE_NOT_DIRECTORY', `Extension tree '${root}' is not a directory.`, {
      file: root,
      hint: 'Pass the directory that holds usr/, not a file inside it.',
    })
}

/**
 * Reads the tree at `root`. Throws HelperError only when the root itself is
 * unusable; problems with entries are recorded on them for the rules.
 */
export function scanTree(root: string): Tree {
  assertTreeRoot(root)
  const entries = new Map<string, TreeEntry>()
  const walk = (absDir: string, relDir: string): void => {
    let names: string[]
    try {
      names = readdirSync(absDir)
    } catch (error) {
      const dir = entries.get(relDir)
      if (dir) dir.readError = (error as NodeJS.ErrnoException).code ?? String(error)
      else throw fsError('TREE_UNREADABLE', 'Cannot list extension tree', absDir, error)
      return
    }
    names.sort()
    for (const name of names) {
      const abs = join(absDir, name)
      const rel = relDir === '' ? name : `${relDir}/${name}`
      let ls
      try {
        ls = lstatSync(abs)
      } catch (error) {
        entries.set(rel, {path: rel, type: 'other', mode: 0, uid: -1, gid: -1, nlink: 0, ino: 0, size: 0,
          readError: (error as NodeJS.ErrnoException).code ?? String(error)})
        continue
      }
      const entry: TreeEntry = {path: rel, type: entryType(ls), mode: ls.mode, uid: ls.uid, gid: ls.gid,
        nlink: ls.nlink, ino: ls.ino, size: ls.size}
      entries.set(rel, entry)
      if (entry.type === 'symlink') {
        entry.linkTarget = readlinkSync(abs)
      } else if (entry.type === 'dir') {
        walk(abs, rel)
      } else if (entry.type === 'file') {
        if (isTextPath(rel)) {
          if (entry.size > MAX_TEXT) entry.readError = 'EFBIG'
          else {
            try {
              const fd = openNoFollow(abs)
              try {
                // Release files keep their bytes: systemd's UTF-8 and NUL checks need them.
                if (rel.startsWith('usr/lib/extension-release.d/')) {
                  entry.raw = readFileSync(fd)
                  entry.text = entry.raw.toString('utf8')
                } else entry.text = readFileSync(fd, 'utf8')
              } finally {
                closeSync(fd)
              }
            } catch (error) {
              entry.readError = (error as NodeJS.ErrnoException).code ?? String(error)
            }
          }
        }
        readHeader(abs, entry)
      }
    }
  }
  walk(root, '')
  const tree = {root, entries}
  readReleaseExtras(tree)
  return tree
}

/** Entries directly inside `dir` (relative), sorted by path. */
export function childrenOf(tree: Tree, dir: string): TreeEntry[] {
  const prefix = dir === '' ? '' : `${dir}/`
  const out: TreeEntry[] = []
  for (const entry of tree.entries.values()) {
    if (!entry.path.startsWith(prefix)) continue
    if (entry.path.slice(prefix.length).includes('/')) continue
    out.push(entry)
  }
  return out
}

/** Top-level directories systemd-sysext merges; everything else in a tree is dropped. */
export const MERGED_DIRS = ['usr', 'opt']

/** Entries that reach the host: usr/, opt/ and everything below them. */
export function mergedEntries(tree: Tree): TreeEntry[] {
  return [...tree.entries.values()].filter((e) => MERGED_DIRS.includes(e.path.split('/', 1)[0]))
}
