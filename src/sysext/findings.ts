/** Validation findings: the pure output of the rules. */

export type Severity = 'error' | 'warning'

export interface Finding {
  /** Stable rule id, e.g. 'release-id-mismatch'. Part of the --json schema. */
  rule: string
  severity: Severity
  /** Path relative to the extension tree root ('' for the tree itself). */
  file: string
  /** One line: what is wrong, with the values involved. */
  message: string
  /** One line: what to do about it. */
  hint: string
}

export function error(rule: string, file: string, message: string, hint: string): Finding {
  return {rule, severity: 'error', file, message, hint}
}

export function warning(rule: string, file: string, message: string, hint: string): Finding {
  return {rule, severity: 'warning', file, message, hint}
}
