/**
 * The one place processes are spawned: absolute-ish command names resolved from a
 * fixed PATH, LC_ALL=C so output can be parsed, a timeout, and failures turned
 * into HelperErrors that carry the command line and its stderr.
 */
import {spawnSync} from 'node:child_process'
import {HelperError} from './errors.js'

export interface RunOptions {
  timeoutMs?: number
  input?: string
  /** Exit codes that are not failures (default: only 0). */
  okCodes?: number[]
  env?: Record<string, string>
  /** Aborting kills the process; run() then throws EXEC_CANCELLED. */
  signal?: AbortSignal
}

export interface RunResult {
  command: string
  exitCode: number
  stdout: string
  stderr: string
}

const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

export function commandLine(file: string, args: readonly string[]): string {
  return [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ')
}

/** Runs a command; throws HelperError (code EXEC_FAILED / EXEC_NOT_FOUND / EXEC_TIMEOUT) unless the exit code is ok. */
export async function run(file: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const command = commandLine(file, args)
  // Loaded on first use: commands that spawn nothing (validate, --version) skip its start-up cost.
  const {execa} = await import('execa')
  const result = await execa(file, args, {
    reject: false,
    timeout: options.timeoutMs ?? 60_000,
    input: options.input,
    stdin: options.input === undefined ? 'ignore' : undefined,
    env: {LC_ALL: 'C', PATH: SYSTEM_PATH, SYSTEMD_COLORS: '0', SYSTEMD_PAGER: '', ...options.env},
    extendEnv: true,
    stripFinalNewline: true,
    cancelSignal: options.signal,
  })
  const stdout = String(result.stdout ?? '')
  const stderr = String(result.stderr ?? '')
  if (result.isCanceled) throw new HelperError('EXEC_CANCELLED', `'${command}' was cancelled.`)
  if (result.timedOut)
    throw new HelperError('EXEC_TIMEOUT', `'${command}' did not finish within ${Math.round((options.timeoutMs ?? 60_000) / 1000)} s.`, {hint: 'Check the system journal (journalctl -b) for what it waited on.'})
  if ((result as {code?: string}).code === 'ENOENT')
    throw new HelperError('EXEC_NOT_FOUND', `'${file}' is not installed on this host.`, {hint: `Install the package that provides ${file}.`})
  const exitCode = result.exitCode ?? -1
  if (!(options.okCodes ?? [0]).includes(exitCode))
    throw new HelperError('EXEC_FAILED', `'${command}' failed (exit ${exitCode})${stderr ? `: ${stderr.split('\n').filter(Boolean).slice(-3).join(' ')}` : '.'}`, {cause: result})
  return {command, exitCode, stdout, stderr}
}

/**
 * Synchronous variant for the few reads a pure scan needs (extended attributes):
 * same environment; returns undefined when the command is not installed.
 */
export function runSyncQuiet(file: string, args: readonly string[], timeoutMs = 10_000): {exitCode: number; stdout: string; stderr: string} | undefined {
  const r = spawnSync(file, args, {
    encoding: 'utf8',
    timeout: timeoutMs,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {...process.env, LC_ALL: 'C', PATH: SYSTEM_PATH},
  })
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
  return {exitCode: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? ''}
}
