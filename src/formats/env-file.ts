/**
 * systemd's env-file grammar (src/basic/env-file.c, parse_env_file_internal), used
 * for os-release and extension-release files. A port of the state machine, so
 * that this parser and systemd read the same bytes the same way:
 *
 * - whitespace before a key, around `=` and at the end of an unquoted value is dropped;
 * - `#` or `;` start a comment only where a key could start; elsewhere they are text;
 * - unquoted values take backslash escapes (backslash-newline continues the line),
 *   double quotes take escapes for `"\`$` (others keep the backslash), single
 *   quotes are literal, and quoted and unquoted pieces concatenate;
 * - a line with no `=` is dropped without an error;
 * - invalid UTF-8 in a key or value makes the whole file unreadable (EINVAL), as
 *   does a NUL byte (read_full_stream refuses embedded NULs); a UTF-8 BOM is not
 *   stripped: it becomes part of the first key;
 * - a later assignment of the same key replaces an earlier one.
 *
 * One difference between versions: before systemd 254 a comment line ending in a
 * backslash swallowed the next line too (COMMENT_ESCAPE always went back to
 * COMMENT); from 254 the newline ends the comment.
 */

export interface EnvFileOptions {
  /** systemd version whose grammar to apply (comment continuation changed in 254). Default: 254+. */
  systemdVersion?: number
}

export interface EnvAssignment {
  key: string
  /** undefined for `KEY=` (systemd passes NULL; os-release readers treat it as unset). */
  value: string | undefined
  /** 1-based line the assignment ended on (systemd's own messages say one more). */
  line: number
}

export type EnvFileResult =
  | {ok: true; assignments: EnvAssignment[]}
  | {ok: false; error: string}

const WHITESPACE = ' \t\n\r'
const NEWLINE = '\n\r'
const COMMENTS = '#;'
/** SHELL_NEED_ESCAPE: what a backslash escapes inside double quotes. */
const SHELL_NEED_ESCAPE = '"\\`$'

const decoder = new TextDecoder('utf-8', {fatal: true, ignoreBOM: true})

/** Strict UTF-8 decoding (no BOM stripping); undefined when invalid. */
function utf8(bytes: Uint8Array): string | undefined {
  try {
    return decoder.decode(bytes)
  } catch {
    return undefined
  }
}

/**
 * Parses `input` as systemd does. A string is taken as already-decoded text; pass
 * the file's bytes (Buffer) to get systemd's UTF-8 and NUL checks.
 */
export function parseEnvFile(input: Uint8Array | string, options: EnvFileOptions = {}): EnvFileResult {
  const bytes = typeof input === 'string' ? Buffer.from(input, 'utf8') : input
  if (bytes.includes(0)) return {ok: false, error: 'the file contains a NUL byte'}
  const commentContinues = options.systemdVersion !== undefined && options.systemdVersion < 254
  // The machine works on bytes; keys and values are decoded (and checked) when pushed.
  type State = 'PRE_KEY' | 'KEY' | 'PRE_VALUE' | 'VALUE' | 'VALUE_ESCAPE' | 'SQ' | 'DQ' | 'DQ_ESCAPE' | 'COMMENT' | 'COMMENT_ESCAPE'
  let state: State = 'PRE_KEY'
  let key: number[] = []
  let value: number[] | undefined
  let lastKeyWs = -1
  let lastValueWs = -1
  let line = 1
  const assignments: EnvAssignment[] = []
  let error: string | undefined
  const is = (set: string, c: number): boolean => c < 128 && set.includes(String.fromCharCode(c))
  const addValue = (c: number): void => {
    ;(value ??= []).push(c)
  }
  const push = (chompValue: boolean): void => {
    let k = key
    if (lastKeyWs !== -1) k = k.slice(0, lastKeyWs)
    let v = value
    if (chompValue && v && lastValueWs !== -1) v = v.slice(0, lastValueWs)
    const keyText = utf8(Uint8Array.from(k))
    if (keyText === undefined) {
      error ??= `line ${line}: invalid UTF-8 in a key`
      return
    }
    const valueText = v === undefined ? undefined : utf8(Uint8Array.from(v))
    if (v !== undefined && valueText === undefined) {
      error ??= `line ${line}: invalid UTF-8 in the value of ${keyText}`
      return
    }
    assignments.push({key: keyText, value: valueText, line})
  }
  for (const c of bytes) {
    if (error) break
    switch (state) {
      case 'PRE_KEY':
        if (is(COMMENTS, c)) state = 'COMMENT'
        else if (!is(WHITESPACE, c)) {
          state = 'KEY'
          lastKeyWs = -1
          key.push(c)
        }
        break
      case 'KEY':
        if (is(NEWLINE, c)) {
          state = 'PRE_KEY'
          line++
          key = []
        } else if (c === 0x3d) {
          state = 'PRE_VALUE'
          lastValueWs = -1
        } else {
          if (!is(WHITESPACE, c)) lastKeyWs = -1
          else if (lastKeyWs === -1) lastKeyWs = key.length
          key.push(c)
        }
        break
      case 'PRE_VALUE':
        if (is(NEWLINE, c)) {
          state = 'PRE_KEY'
          push(false)
          line++
          key = []
          value = undefined
        } else if (c === 0x27) state = 'SQ'
        else if (c === 0x22) state = 'DQ'
        else if (c === 0x5c) state = 'VALUE_ESCAPE'
        else if (!is(WHITESPACE, c)) {
          state = 'VALUE'
          addValue(c)
        }
        break
      case 'VALUE':
        if (is(NEWLINE, c)) {
          state = 'PRE_KEY'
          push(true)
          line++
          key = []
          value = undefined
        } else if (c === 0x5c) {
          state = 'VALUE_ESCAPE'
          lastValueWs = -1
        } else {
          if (!is(WHITESPACE, c)) lastValueWs = -1
          else if (lastValueWs === -1) lastValueWs = value?.length ?? 0
          addValue(c)
        }
        break
      case 'VALUE_ESCAPE':
        state = 'VALUE'
        // An escaped newline is eaten entirely.
        if (!is(NEWLINE, c)) addValue(c)
        break
      case 'SQ':
        if (c === 0x27) state = 'PRE_VALUE'
        else addValue(c)
        break
      case 'DQ':
        if (c === 0x22) state = 'PRE_VALUE'
        else if (c === 0x5c) state = 'DQ_ESCAPE'
        else addValue(c)
        break
      case 'DQ_ESCAPE':
        state = 'DQ'
        if (is(SHELL_NEED_ESCAPE, c)) addValue(c)
        else if (c !== 0x0a) {
          addValue(0x5c)
          addValue(c)
        }
        break
      case 'COMMENT':
        if (c === 0x5c) state = 'COMMENT_ESCAPE'
        else if (is(NEWLINE, c)) {
          state = 'PRE_KEY'
          line++
        }
        break
      case 'COMMENT_ESCAPE':
        if (commentContinues) state = 'COMMENT'
        else if (is(NEWLINE, c)) {
          state = 'PRE_KEY'
          line++
        } else state = 'COMMENT'
        break
    }
  }
  if (!error && ['PRE_VALUE', 'VALUE', 'VALUE_ESCAPE', 'SQ', 'DQ', 'DQ_ESCAPE'].includes(state)) push(state === 'VALUE')
  if (error) return {ok: false, error}
  return {ok: true, assignments}
}

/**
 * The fields as systemd's readers see them: the last assignment of a key wins.
 * `emptyAsUnset` drops `KEY=` (parse_env_file: NULL value), as for the host's
 * os-release; otherwise `KEY=` reads as '' (load_env_file_pairs, extension-release).
 */
export function envFields(assignments: EnvAssignment[], emptyAsUnset: boolean): Record<string, string> {
  const fields: Record<string, string> = {}
  for (const {key, value} of assignments) {
    if (value === undefined && emptyAsUnset) delete fields[key]
    else fields[key] = value ?? ''
  }
  return fields
}
