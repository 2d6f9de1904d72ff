/** The image entries systemd-sysext would see for a name, across its search directories. */
import {lstatSync, readlinkSync, realpathSync, statSync} from 'node:fs'
import {dirname, join} from 'node:path'
import type {Paths, TargetKind} from './state.js'

export interface ImageEntry {
  kind: TargetKind
  path: string
  type: 'symlink' | 'dir' | 'raw' | 'other'
  /** Symlink target. */
  target?: string
}

const SEARCH_ORDER: TargetKind[] = ['persistent', 'runtime', 'local']

/** Entries named NAME or NAME.raw in every target directory, in systemd's precedence order. */
export function imageEntries(paths: Paths, name: string): ImageEntry[] {
  const out: ImageEntry[] = []
  for (const kind of SEARCH_ORDER) {
    for (const file of [name, `${name}.raw`]) {
      const path = join(paths.targets[kind], file)
      let st
      try {
        st = lstatSync(path)
      } catch {
        continue
      }
      if (st.isSymbolicLink()) out.push({kind, path, type: 'symlink', target: readlinkSync(path)})
      else if (st.isDirectory()) out.push({kind, path, type: 'dir'})
      else out.push({kind, path, type: file.endsWith('.raw') ? 'raw' : 'other'})
    }
  }
  return out
}

/**
 * A tree may be linked in place only if nobody but root can swap it: the tree
 * and every directory above it root-owned and not group/world-writable.
 * Returns why not, or undefined when it is safe.
 */
export function unsafeAncestor(tree: string): string | undefined {
  let dir: string
  try {
    dir = realpathSync(tree)
  } catch {
    return `${tree} cannot be resolved`
  }
  for (;;) {
    const st = statSync(dir)
    if (st.uid !== 0) return `${dir} is owned by uid ${st.uid}`
    if (st.mode & 0o022 && !(st.mode & 0o1000)) return `${dir} is writable by others (mode ${(st.mode & 0o7777).toString(8)})`
    if (dir === '/') return undefined
    dir = dirname(dir)
  }
}
