/**
 * Drift: the live content of an installed extension (its stage, or the source
 * tree it is linked to in place) compared with what install validated and merged.
 * Metadata first (an lstat walk); the content hash only when metadata differs.
 */
import {lstatSync, readdirSync} from 'node:fs'
import {join} from 'node:path'
import {contentHash} from '../sysext/declarations.js'
import {MERGED_DIRS, scanTree} from '../sysext/tree.js'
import type {Manifest, ManifestEntry} from './state.js'

function typeOf(st: {isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean}): string {
  return st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other'
}

function walk(root: string): ManifestEntry[] {
  const out: ManifestEntry[] = []
  const visit = (abs: string, rel: string): void => {
    let names: string[]
    try {
      names = readdirSync(abs).sort()
    } catch {
      return
    }
    for (const name of names) {
      if (rel === '' && !MERGED_DIRS.includes(name)) continue
      const path = rel ? `${rel}/${name}` : name
      let st
      try {
        st = lstatSync(join(abs, name))
      } catch {
        continue
      }
      const type = typeOf(st)
      out.push([path, type, st.mode & 0o7777, st.uid, type === 'dir' ? 0 : st.size, Math.round(st.mtimeMs), Math.round(st.ctimeMs), st.ino])
      if (type === 'dir') visit(join(abs, name), path)
    }
  }
  visit(root, '')
  return out
}

/** What is merged from `root` now (recorded at install). */
export function takeManifest(root: string): Manifest {
  return {hash: contentHash(scanTree(root)), entries: walk(root)}
}

export interface Drift {
  drifted: boolean
  added: string[]
  removed: string[]
  changed: string[]
  /** Metadata differed but the content hash is the one recorded (e.g. touched, copied back). */
  metadataOnly: boolean
}

const FIRST = 5

/** Compares `root` with `manifest`; cheap when nothing changed. */
export function compareManifest(manifest: Manifest, root: string): Drift {
  const live = new Map(walk(root).map((e) => [e[0], e]))
  const recorded = new Map(manifest.entries.map((e) => [e[0], e]))
  const added: string[] = []
  const removed: string[] = []
  const changed: string[] = []
  for (const [path, e] of live) {
    const r = recorded.get(path)
    if (!r) added.push(path)
    else if (r.slice(1).some((v, i) => v !== e[i + 1])) changed.push(path)
  }
  for (const path of recorded.keys()) if (!live.has(path)) removed.push(path)
  if (added.length + removed.length + changed.length === 0) return {drifted: false, added, removed, changed, metadataOnly: false}
  const sameShape = added.length === 0 && removed.length === 0 &&
    changed.every((p) => {
      const [, t, m, u, s] = live.get(p) as ManifestEntry
      const [, rt, rm, ru, rs] = recorded.get(p) as ManifestEntry
      return t === rt && m === rm && u === ru && s === rs
    })
  if (sameShape) {
    let hash: string | undefined
    try {
      hash = contentHash(scanTree(root))
    } catch {
      hash = undefined
    }
    if (hash === manifest.hash) return {drifted: false, added, removed, changed, metadataOnly: true}
  }
  return {drifted: true, added, removed, changed, metadataOnly: false}
}

/** "added usr/bin/x, usr/…; changed …; removed …" with the first few of each. */
export function describeDrift(d: Drift): string {
  const part = (what: string, list: string[]): string | undefined =>
    list.length === 0 ? undefined : `${what} ${list.slice(0, FIRST).join(', ')}${list.length > FIRST ? ` and ${list.length - FIRST} more` : ''}`
  return [part('added', d.added), part('changed', d.changed), part('removed', d.removed)].filter(Boolean).join('; ')
}
