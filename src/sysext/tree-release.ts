/**
 * The parts of scanning that only release files need (called once by scanTree):
 * the `user.extension-release.strict` xattr of each regular release file, and for
 * release-file symlinks the file they lead to inside the image, chased the way
 * systemd's chase(..., CHASE_PREFIX_ROOT) does: absolute targets start at the
 * image root and `..` never leaves it.
 */
import {closeSync, constants, openSync, readFileSync} from 'node:fs'
import {join} from 'node:path'
import {readStrictXattrs} from './xattr.js'

const DIR = 'usr/lib/extension-release.d/'

interface Entry {
  path: string
  type: 'file' | 'dir' | 'symlink' | 'other'
  linkTarget?: string
  size: number
  raw?: Buffer
  strictXattr?: string | null
  chased?: {path: string; type: Entry['type'] | 'missing'; raw?: Buffer}
}

/** Chases `rel` inside the image; the final path and its type ('missing' when a component does not exist). */
export function chaseInImage(entries: Map<string, Pick<Entry, 'type' | 'linkTarget'>>, rel: string): {path: string; type: Entry['type'] | 'missing'} {
  let pending = rel.split('/').filter((c) => c !== '' && c !== '.')
  let done: string[] = []
  for (let hops = 0; pending.length > 0;) {
    const component = pending.shift() as string
    if (component === '..') {
      done.pop()
      continue
    }
    const candidate = [...done, component].join('/')
    const entry = entries.get(candidate)
    if (!entry) return {path: candidate, type: 'missing'}
    if (entry.type === 'symlink') {
      // chase() gives up with ELOOP after 32 symlinks.
      if (++hops > 32) return {path: candidate, type: 'missing'}
      const target = entry.linkTarget ?? ''
      if (target.startsWith('/')) done = []
      pending = [...target.split('/').filter((c) => c !== '' && c !== '.'), ...pending]
      continue
    }
    if (pending.length > 0 && entry.type !== 'dir') return {path: candidate, type: 'missing'}
    done.push(component)
  }
  const path = done.join('/')
  return {path, type: path === '' ? 'dir' : (entries.get(path)?.type ?? 'missing')}
}

/** The bytes of a regular file, never through a symlink swapped in since the scan. */
function readNoFollow(abs: string): Buffer {
  const fd = openSync(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  try {
    return readFileSync(fd)
  } finally {
    closeSync(fd)
  }
}

export function readReleaseExtras(tree: {root: string; entries: Map<string, Entry>}): void {
  const release = [...tree.entries.values()].filter((e) => e.path.startsWith(DIR) && !e.path.slice(DIR.length).includes('/'))
  const files = release.filter((e) => e.type === 'file')
  const xattrs = readStrictXattrs(files.map((e) => join(tree.root, e.path)))
  for (const e of files) if (xattrs) e.strictXattr = xattrs.get(join(tree.root, e.path)) ?? null
  for (const e of release) {
    if (e.type !== 'symlink') continue
    const chased = chaseInImage(tree.entries, e.path)
    e.chased = chased
    if (chased.type === 'file') {
      const target = tree.entries.get(chased.path)
      try {
        e.chased.raw = target?.raw ?? (target && target.size <= 1024 * 1024 ? readNoFollow(join(tree.root, chased.path)) : undefined)
      } catch {
        // unreadable: the rule reports it
      }
    }
  }
}
