/**
 * os-release / extension-release files. Their grammar is a subset of shell
 * assignments; `ini` parses it correctly for KEY=VALUE lines with plain or
 * double/single-quoted values, which is what these files contain. Lines that are
 * neither assignments, comments nor blank are reported separately, because ini
 * silently accepts them (and systemd ignores them).
 */
import ini from 'ini'

export type ReleaseFields = Record<string, string>

export interface ParsedRelease {
  fields: ReleaseFields
  /** 1-based numbers and text of lines systemd would not parse as KEY=VALUE. */
  badLines: Array<{line: number; text: string}>
}

const ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*=/

export function parseRelease(text: string): ParsedRelease {
  const badLines: ParsedRelease['badLines'] = []
  const lines = text.split('\n')
  const good: string[] = []
  lines.forEach((raw, index) => {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return
    if (!ASSIGNMENT.test(line)) {
      badLines.push({line: index + 1, text: raw})
      return
    }
    good.push(line)
  })
  const parsed = ini.parse(good.join('\n')) as Record<string, unknown>
  const fields: ReleaseFields = {}
  for (const [key, value] of Object.entries(parsed)) {
    if (typeof value === 'string') fields[key] = value
    else if (value === true) fields[key] = ''
  }
  return {fields, badLines}
}

function quote(value: string): string {
  return /^[A-Za-z0-9_.:+\-/]*$/.test(value) ? value : `"${value.replace(/(["\\$`])/g, '\\$1')}"`
}

/** Renders fields in the given order, one KEY=VALUE a line. */
export function renderRelease(fields: Array<[string, string]>): string {
  return fields.map(([key, value]) => `${key}=${quote(value)}\n`).join('')
}
