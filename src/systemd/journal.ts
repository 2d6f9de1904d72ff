/**
 * Why an activation failed, from the journal: the lines a unit (or, for a
 * service-file-only activation, the whole system) logged since the attempt,
 * and the cause recognised in them (the loader's and systemd's own words).
 */
import {run} from '../exec.js'

export type ActivationCause = 'missing-library' | 'missing-symbol-version' | 'missing-user' | 'exec-format' | 'permission' | 'exec-missing'

export interface Classified {
  cause: ActivationCause
  /** The library, version, user or path involved, when the line names it. */
  subject?: string
  /** The journal line it was read from. */
  line: string
  /** One sentence for the user. */
  summary: string
}

const PATTERNS: Array<[RegExp, ActivationCause, (m: RegExpMatchArray) => {subject?: string; summary: string}]> = [
  [/error while loading shared libraries: ([^:\s]+): cannot open shared object file/, 'missing-library',
    (m) => ({subject: m[1], summary: `the loader cannot find the library ${m[1]} on this host`})],
  [/version [`']([^']+)' not found \(required by ([^)]+)\)/, 'missing-symbol-version',
    (m) => ({subject: m[1], summary: `${m[2]} needs symbol version ${m[1]}, which this host's libraries do not define`})],
  [/Failed to find user '?([^'\s]+)'?|Unknown user '?([^'\s]+)'?|user '?([^'\s]+)'? (?:does not exist|not found)|Failed to resolve user '?([^'\s]+)'?/i, 'missing-user',
    (m) => ({subject: m[1] ?? m[2] ?? m[3] ?? m[4], summary: `the user ${m[1] ?? m[2] ?? m[3] ?? m[4]} does not exist on this host`})],
  [/Failed to determine (?:user|group) credentials|Failed at step (?:USER|GROUP) spawning|status=217\/USER|Cannot do system-bus activation with no user/i, 'missing-user',
    () => ({summary: 'the user or group the service runs as does not exist on this host'})],
  [/Exec format error|status=203\/EXEC.*format/i, 'exec-format', () => ({summary: 'the kernel cannot execute the binary (wrong architecture or not a program)'})],
  [/Permission denied/i, 'permission', () => ({summary: 'permission denied (file mode, noexec mount or a security module)'})],
  [/Failed to (?:execute|locate executable) ([^:\s]+)|Failed at step EXEC spawning ([^:\s]+)|Cannot launch daemon, file not found/i, 'exec-missing',
    (m) => ({subject: m[1] ?? m[2], summary: `the service binary ${m[1] ?? m[2] ?? ''} cannot be executed`.replace('  ', ' ')})],
]

/** The first recognised cause in the lines, most specific patterns first. */
export function classifyJournal(lines: readonly string[]): Classified | undefined {
  for (const [re, cause, describe] of PATTERNS)
    for (const line of lines) {
      const m = line.match(re)
      if (m) return {cause, line: line.trim(), ...describe(m)}
    }
  return undefined
}

/**
 * Journal lines since `since` (ms epoch) of `unit`, or of the whole system when no
 * unit is given (then only lines mentioning one of `mentions` or a known cause).
 * At most `max` lines; [] when journalctl is unavailable.
 */
export async function journalSince(since: number, unit: string | undefined, mentions: string[] = [], max = 40): Promise<string[]> {
  const args = ['-b', '--no-pager', '-q', '-o', 'cat', `--since=@${Math.floor(since / 1000) - 1}`]
  if (unit) args.push('-u', unit, '-n', String(max))
  else args.push('-n', '400')
  let lines: string[]
  try {
    lines = (await run('journalctl', args, {timeoutMs: 10_000, okCodes: [0, 1]})).stdout.split('\n').filter((l) => l.trim() !== '')
  } catch {
    return []
  }
  if (!unit) lines = lines.filter((l) => mentions.some((m) => m !== '' && l.includes(m)) || classifyJournal([l]) !== undefined)
  return lines.slice(-max)
}
