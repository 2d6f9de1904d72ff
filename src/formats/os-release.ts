/**
 * os-release / extension-release files, read with systemd's env-file grammar
 * (env-file.ts), not ini: quoting, comments, escapes and the UTF-8 rules differ.
 */
import {type EnvFileOptions, envFields, parseEnvFile} from './env-file.js'

export type ReleaseFields = Record<string, string>

export interface ParsedRelease {
  fields: ReleaseFields
  /** Set when systemd could not read the file at all (invalid UTF-8, NUL byte). */
  error?: string
}

export interface ReleaseParseOptions extends EnvFileOptions {
  /**
   * 'os-release': the host's file, read with parse_env_file (`KEY=` is unset);
   * 'extension-release': read with load_env_file_pairs (`KEY=` is '').
   */
  kind?: 'os-release' | 'extension-release'
}

export function parseRelease(input: string | Uint8Array, options: ReleaseParseOptions = {}): ParsedRelease {
  const parsed = parseEnvFile(input, options)
  if (!parsed.ok) return {fields: {}, error: parsed.error}
  return {fields: envFields(parsed.assignments, options.kind === 'os-release')}
}

function quote(value: string): string {
  return /^[A-Za-z0-9_.:+\-/]*$/.test(value) ? value : `"${value.replace(/(["\\$`])/g, '\\$1')}"`
}

/** Renders fields in the given order, one KEY=VALUE a line. */
export function renderRelease(fields: Array<[string, string]>): string {
  return fields.map(([key, value]) => `${key}=${quote(value)}\n`).join('')
}
