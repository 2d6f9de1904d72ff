/**
 * sysusers.d(5) lines: `TYPE NAME ID GECOS HOME SHELL`, fields separated by
 * whitespace, double-quoted fields may hold spaces, `-` means unset, `#` starts
 * a comment line. Only the fields sysext-helper judges are interpreted.
 */

export interface SysusersLine {
  line: number
  /** 'u', 'u!', 'g', 'm', 'r', or whatever else the line says. */
  type: string
  name: string
  /** The ID field as written ('-' when unset); for m lines the group. */
  id: string
  gecos?: string
  home?: string
  shell?: string
}

export interface SysusersFile {
  lines: SysusersLine[]
  problems: Array<{line: number; message: string}>
}

function fields(text: string): string[] | undefined {
  const out: string[] = []
  let i = 0
  while (i < text.length) {
    while (i < text.length && /\s/.test(text[i])) i++
    if (i >= text.length) break
    let word = ''
    if (text[i] === '"') {
      const end = text.indexOf('"', i + 1)
      if (end === -1) return undefined
      word = text.slice(i + 1, end)
      i = end + 1
    } else {
      while (i < text.length && !/\s/.test(text[i])) word += text[i++]
    }
    out.push(word)
  }
  return out
}

export function parseSysusers(text: string): SysusersFile {
  const lines: SysusersLine[] = []
  const problems: SysusersFile['problems'] = []
  text.split('\n').forEach((raw, index) => {
    const line = index + 1
    const trimmed = raw.trim()
    if (trimmed === '' || trimmed.startsWith('#')) return
    const f = fields(trimmed)
    if (!f) {
      problems.push({line, message: 'unbalanced quotes'})
      return
    }
    if (f.length < 2) {
      problems.push({line, message: `'${trimmed}' has no name`})
      return
    }
    lines.push({line, type: f[0], name: f[1], id: f[2] ?? '-', gecos: f[3], home: f[4], shell: f[5]})
  })
  return {lines, problems}
}

export interface Account {
  name: string
  id: number
}

/** /etc/passwd or /etc/group: name -> id (first field, third field). */
export function parseAccounts(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const raw of text.split('\n')) {
    if (raw === '' || raw.startsWith('#') || raw.startsWith('+') || raw.startsWith('-')) continue
    const parts = raw.split(':')
    if (parts.length < 3) continue
    const id = Number(parts[2])
    if (parts[0] !== '' && Number.isInteger(id)) out.set(parts[0], id)
  }
  return out
}
