/** What an extension declares to the host: bus names, units, polkit actions. Used to verify and to clean up. */
import {createHash} from 'node:crypto'
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {serviceFiles, UNITS_DIR} from './rules/dbus.js'
import {parseXml} from '../formats/xml.js'
import {type Tree, childrenOf, mergedEntries} from './tree.js'

export interface Declarations {
  /** Well-known names from usr/share/dbus-1/system-services/*.service, with their SystemdService=. */
  busNames: Array<{name: string; unit?: string}>
  /** Unit file names in usr/lib/systemd/system. */
  units: string[]
  /** polkit action ids from usr/share/polkit-1/actions/*.policy. */
  polkitActions: string[]
  /** Whether anything under usr/share/polkit-1 is shipped (polkit must reload). */
  touchesPolkit: boolean
}

export function declarations(tree: Tree): Declarations {
  const polkitActions: string[] = []
  for (const entry of childrenOf(tree, 'usr/share/polkit-1/actions')) {
    if (!entry.path.endsWith('.policy') || entry.text === undefined) continue
    const parsed = parseXml(entry.text)
    if (!('root' in parsed)) continue
    for (const action of parsed.root.children) if (action.name === 'action' && action.attrs.id) polkitActions.push(action.attrs.id)
  }
  return {
    busNames: serviceFiles(tree).map((s) => ({name: s.name, unit: s.systemdService})),
    units: childrenOf(tree, UNITS_DIR).filter((e) => e.type === 'file' || e.type === 'symlink').map((e) => e.path.slice(UNITS_DIR.length + 1)),
    polkitActions: [...new Set(polkitActions)].sort(),
    touchesPolkit: [...tree.entries.keys()].some((p) => p.startsWith('usr/share/polkit-1/')),
  }
}

/**
 * Content hash of what would be merged: paths, types, modes, link targets and
 * file contents, plus any generated release file. Ownership is left out: a
 * staged copy is chowned to root and must hash the same as its source.
 */
export function contentHash(tree: Tree, extra = ''): string {
  const hash = createHash('sha256')
  for (const entry of mergedEntries(tree).sort((a, b) => (a.path < b.path ? -1 : 1))) {
    hash.update(`${entry.path}\0${entry.type}\0${(entry.mode & 0o7777).toString(8)}\0${entry.linkTarget ?? ''}\0`)
    if (entry.type === 'file') hash.update(entry.text ?? readFileSync(join(tree.root, entry.path)))
    hash.update('\n')
  }
  hash.update(extra)
  return hash.digest('hex')
}
