/** The image entries systemd-sysext would see for a name, across its search directories. */
import {lstatSync, readlinkSync} from 'node:fs'
import {join} from 'node:path'
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
