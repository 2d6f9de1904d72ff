import {HelperError} from '../errors.js'

/** Progress events: the core emits them, a reporter renders them (ora, plain lines, or nothing for --json). */

export type StepName = 'plan' | 'recover' | 'lock' | 'preflight' | 'validate' | 'stage' | 'link' | 'refresh' | 'reload' | 'verify' | 'commit' | 'rollback' | 'stop' | 'unlink' | 'cleanup' | 'enable'

export type ProgressEvent =
  | {type: 'step-start'; step: StepName; label: string}
  | {type: 'step-end'; step: StepName; ok: boolean; ms: number; detail?: string}
  | {type: 'warning'; message: string; hint?: string}
  | {type: 'info'; message: string}

export type Emit = (event: ProgressEvent) => void

export interface StepRecord {
  step: StepName
  label: string
  ok: boolean
  ms: number
  detail?: string
}

/** Runs `fn` as a step: emits start/end, records timing into `log`. */
export async function step<T>(emit: Emit, log: StepRecord[], name: StepName, label: string, fn: () => Promise<T> | T, detail?: (value: T) => string | undefined): Promise<T> {
  // Fault injection for the e2e tests: die like `kill -9`, or hold still, when a step starts.
  if (process.env.SYSEXT_HELPER_CRASH_AT === name) process.kill(process.pid, 'SIGKILL')
  if (process.env.SYSEXT_HELPER_PAUSE_AT === name) await new Promise((r) => setTimeout(r, 3000))
  emit({type: 'step-start', step: name, label})
  const started = performance.now()
  try {
    const value = await fn()
    const ms = Math.round(performance.now() - started)
    const d = detail?.(value)
    log.push({step: name, label, ok: true, ms, detail: d})
    emit({type: 'step-end', step: name, ok: true, ms, detail: d})
    return value
  } catch (error) {
    const ms = Math.round(performance.now() - started)
    log.push({step: name, label, ok: false, ms, detail: (error as Error).message})
    emit({type: 'step-end', step: name, ok: false, ms, detail: (error as Error).message})
    if (error instanceof HelperError && error.step === undefined)
      throw new HelperError(error.code, error.message, {hint: error.hint, step: name, file: error.file, exit: error.exit, data: error.data, cause: error.cause})
    throw error
  }
}
