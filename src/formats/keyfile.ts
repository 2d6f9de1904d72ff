/**
 * GKeyFile / Desktop Entry style key files: D-Bus service files, Flatpak's
 * installations.d and .flatpak-info. `ini` does not fit: group names such as
 * `[Installation "extra"]` or `[D-BUS Service]` must be kept verbatim, and
 * `;` is a list separator here, not a comment.
 */

export interface KeyFileGroup {
  name: string
  /** 1-based line of the group header. */
  line: number
  entries: Map<string, {value: string; line: number}>
}

export interface KeyFileProblem {
  line: number
  message: string
}

export interface KeyFile {
  groups: KeyFileGroup[]
  problems: KeyFileProblem[]
}

// eslint-disable-next-line no-control-regex -- GKeyFile refuses control characters in group names
const GROUP = /^\[([^[\]\x00-\x1f]+)\]$/
const ENTRY = /^([A-Za-z0-9-]+(?:\[[^\]]+\])?)\s*=\s*(.*)$/

function unescape(value: string): string {
  return value.replace(/\\(.)/g, (_, c: string) => ({s: ' ', n: '\n', t: '\t', r: '\r', '\\': '\\'})[c] ?? `\\${c}`)
}

export function parseKeyFile(text: string): KeyFile {
  const groups: KeyFileGroup[] = []
  const problems: KeyFileProblem[] = []
  let current: KeyFileGroup | undefined
  text.split('\n').forEach((raw, index) => {
    const line = index + 1
    const trimmed = raw.replace(/\r$/, '').trim()
    if (trimmed === '' || trimmed.startsWith('#')) return
    const group = GROUP.exec(trimmed)
    if (group) {
      if (groups.some((g) => g.name === group[1])) problems.push({line, message: `group [${group[1]}] appears twice`})
      current = {name: group[1], line, entries: new Map()}
      groups.push(current)
      return
    }
    const entry = ENTRY.exec(trimmed)
    if (!entry) {
      problems.push({line, message: trimmed.startsWith('[') ? `invalid group header '${trimmed}'` : `'${trimmed}' is not a key=value line`})
      return
    }
    if (!current) {
      problems.push({line, message: `key '${entry[1]}' appears before any [group] header`})
      return
    }
    if (current.entries.has(entry[1])) problems.push({line, message: `key '${entry[1]}' appears twice in [${current.name}]`})
    current.entries.set(entry[1], {value: unescape(entry[2]), line})
  })
  return {groups, problems}
}

/** The value of `key` in group `group`, if both exist. */
export function keyFileValue(file: KeyFile, group: string, key: string): string | undefined {
  return file.groups.find((g) => g.name === group)?.entries.get(key)?.value
}
