/**
 * systemd unit files, parsed the way systemd's config_parse() reads them
 * (src/shared/conf-parser.c), and Exec*= command lines split the way
 * config_parse_exec() does (src/core/load-fragment.c).
 */

export interface UnitAssignment {
  key: string
  value: string
  /** 1-based line where the assignment starts (the first of continued lines). */
  line: number
}

export interface UnitSection {
  name: string
  /** Line of the first header of this section (repeated headers continue the same section). */
  line: number
  /**
   * Key -> its effective assignments, in file order. An empty assignment
   * (`Key=`) resets the list, as systemd does for list settings and to the
   * default for single ones; the key then maps to an empty array.
   */
  entries: Map<string, UnitAssignment[]>
}

export interface UnitFileProblem {
  line: number
  message: string
  /** systemd refuses to load the whole file (otherwise it ignores the line). */
  fatal: boolean
}

export interface UnitFile {
  sections: UnitSection[]
  problems: UnitFileProblem[]
}

const COMMENTS = '#;'
const WHITESPACE = /^[ \t\n\r]+|[ \t\n\r]+$/g

/** conf-parser's string_is_safe(): no control characters, quotes or backslashes. */
function isSafe(name: string): boolean {
  // eslint-disable-next-line no-control-regex -- a name with control characters is never safe to show or use
  return !/[\x00-\x1f\x7f"'\\]/.test(name)
}

/** Whether the text ends in a backslash that is not itself escaped. */
function endsEscaped(text: string): boolean {
  let escaped = false
  for (const c of text) escaped = escaped ? false : c === '\\'
  return escaped
}

export function parseUnitFile(text: string): UnitFile {
  const sections: UnitSection[] = []
  const problems: UnitFileProblem[] = []
  let section: UnitSection | undefined
  // After an ignored section header systemd stays quiet about the assignments in it.
  let inIgnoredSection = false

  const parseLine = (raw: string, line: number): boolean => {
    const l = raw.replace(WHITESPACE, '')
    if (l === '') return true
    if (l.includes('\uFFFD')) {
      problems.push({line, message: 'Line is not valid UTF-8, ignoring.', fatal: false})
      return true
    }
    if (l.startsWith('[')) {
      if (!l.endsWith(']')) {
        problems.push({line, message: `Invalid section header '${l}'.`, fatal: true})
        return false
      }
      const name = l.slice(1, -1)
      if (!isSafe(name)) {
        problems.push({line, message: `Bad characters in section header '${l}'.`, fatal: true})
        return false
      }
      section = sections.find((s) => s.name === name)
      if (!section) {
        section = {name, line, entries: new Map()}
        sections.push(section)
      }
      inIgnoredSection = false
      return true
    }
    if (!section) {
      if (!inIgnoredSection) problems.push({line, message: 'Assignment outside of section, ignoring.', fatal: false})
      return true
    }
    const eq = l.indexOf('=')
    if (eq === -1) {
      problems.push({line, message: `Missing '=' in '${l}', ignoring line.`, fatal: false})
      return true
    }
    if (eq === 0) {
      problems.push({line, message: `Missing key name before '=' in '${l}', ignoring line.`, fatal: false})
      return true
    }
    const key = l.slice(0, eq).replace(WHITESPACE, '')
    const value = l.slice(eq + 1).replace(WHITESPACE, '')
    if (value === '') section.entries.set(key, [])
    else {
      const list = section.entries.get(key)
      if (list) list.push({key, value, line})
      else section.entries.set(key, [{key, value, line}])
    }
    return true
  }

  const lines = text.replace(/^\uFEFF/, '').split(/\r\n|\n|\r/)
  if (lines.at(-1) === '') lines.pop()
  let continuation: {text: string; line: number} | undefined
  for (let index = 0; index < lines.length; index++) {
    const raw = lines[index]
    const line = index + 1
    // Comment lines are dropped before continuation handling, also in the middle of a continued line.
    const first = raw.replace(/^[ \t\n\r]+/, '')[0]
    if (first !== undefined && COMMENTS.includes(first)) continue
    const joined = continuation ? continuation.text + raw : raw
    const start = continuation ? continuation.line : line
    if (endsEscaped(joined)) {
      continuation = {text: `${joined.slice(0, -1)} `, line: start}
      continue
    }
    continuation = undefined
    if (!parseLine(joined, start)) return {sections, problems}
  }
  if (continuation) parseLine(continuation.text, continuation.line)
  return {sections, problems}
}

/** The effective assignments of `key` in `section` (merged over repeated headers). */
export function unitValues(file: UnitFile, section: string, key: string): UnitAssignment[] {
  return file.sections.find((s) => s.name === section)?.entries.get(key) ?? []
}

/** The assignment in effect for a single-valued key: the last one. */
export function unitValue(file: UnitFile, section: string, key: string): UnitAssignment | undefined {
  return unitValues(file, section, key).at(-1)
}

export interface ExecCommand {
  /** The executable as written after the prefixes: absolute, or a bare name systemd searches for. */
  path: string
  /** `-`: a failing (or missing) command is recorded but does not fail the unit. */
  ignoreFailure: boolean
  /** `@`: the second word is argv[0]. */
  separateArgv0: boolean
  /** `:`: no environment variable expansion. */
  noEnvExpand: boolean
  /** `+`: runs with full privileges, outside the sandboxing of the unit. */
  fullyPrivileged: boolean
  /** `!`: User=, Group= and SupplementaryGroups= are not applied. (`!!` is accepted and, as on current systemd, ignored.) */
  noSetuid: boolean
  /** `|` (systemd 258+): the rest is a shell command line run by /bin/sh. */
  viaShell: boolean
}

const C_ESCAPES: Record<string, string> = {a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', s: ' ', '\\': '\\', '"': '"', "'": "'"}

/**
 * The first word of a command line with systemd's quoting (extract_first_word
 * with EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE): quotes removed, C escapes decoded.
 * Returns undefined for unbalanced quotes or a dangling escape.
 */
export function firstWord(value: string): string | undefined {
  let word = ''
  let quote: string | undefined
  let i = value.search(/\S|$/)
  for (; i < value.length; i++) {
    const c = value[i]
    if (c === '\\') {
      const next = value[++i]
      if (next === undefined) return undefined
      const hex = next === 'x' ? /^[0-9a-fA-F]{2}/.exec(value.slice(i + 1)) : null
      if (hex) {
        word += String.fromCharCode(parseInt(hex[0], 16))
        i += 2
      } else {
        word += C_ESCAPES[next] ?? next
      }
    } else if (quote) {
      if (c === quote) quote = undefined
      else word += c
    } else if (c === '"' || c === "'") {
      quote = c
    } else if (/\s/.test(c)) {
      break
    } else {
      word += c
    }
  }
  return quote ? undefined : word
}

/**
 * Splits an Exec*= value into its prefixes and executable. Each prefix may be
 * given once; `+` excludes `!` (a repeated or conflicting prefix becomes part
 * of the path, which then is not absolute, as in systemd).
 * Returns an error message (systemd's wording) when systemd rejects the line.
 */
export function parseExecCommand(value: string): ExecCommand | {error: string} {
  const word = firstWord(value)
  if (word === undefined) return {error: `Invalid quoting or escaping in '${value}'`}
  const cmd: ExecCommand = {path: '', ignoreFailure: false, separateArgv0: false, noEnvExpand: false,
    fullyPrivileged: false, noSetuid: false, viaShell: false}
  let ambient = false
  let i = 0
  for (; i < word.length; i++) {
    const c = word[i]
    if (c === '-' && !cmd.ignoreFailure) cmd.ignoreFailure = true
    else if (c === '@' && !cmd.separateArgv0) cmd.separateArgv0 = true
    else if (c === ':' && !cmd.noEnvExpand) cmd.noEnvExpand = true
    else if (c === '+' && !cmd.fullyPrivileged && !cmd.noSetuid) cmd.fullyPrivileged = true
    else if (c === '!' && !cmd.fullyPrivileged && !cmd.noSetuid && !ambient) cmd.noSetuid = true
    else if (c === '!' && cmd.noSetuid && !ambient) {
      // `!!` was the ambient-capabilities hack; current systemd accepts and ignores it.
      cmd.noSetuid = false
      ambient = true
    }
    else if (c === '|' && !cmd.viaShell) cmd.viaShell = true
    else break
  }
  cmd.path = word.slice(i)
  if (cmd.viaShell) return cmd
  if (cmd.path === '') return {error: `Empty executable name in '${value}'`}
  if (!cmd.path.startsWith('/')) {
    if (cmd.path.includes('/') || cmd.path === '.' || cmd.path === '..')
      return {error: `Neither a valid executable name nor an absolute path: ${cmd.path}`}
    return cmd
  }
  if (cmd.path.endsWith('/')) return {error: `Executable path specifies a directory: ${cmd.path}`}
  if (cmd.path.split('/').some((c) => c === '.' || c === '..') || cmd.path.includes('//'))
    return {error: `Executable path is not normalized: ${cmd.path}`}
  return cmd
}
