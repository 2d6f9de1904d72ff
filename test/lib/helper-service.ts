/** The monitor helper service in test mode, as nobody, on a private bus (for integration tests). */
import {type ChildProcess, spawn} from 'node:child_process'
import {join} from 'node:path'
import {REPO_ROOT} from './fixtures.js'
import {NOBODY} from './private-bus.js'

export const HELPER_MAIN = join(REPO_ROOT, 'dist/src/helper/main.js')
export const MANAGER_MAIN = join(REPO_ROOT, 'dist/src/helper/manager-main.js')

export interface Service {
  child: ChildProcess
  log: () => string
  waitForLog: (re: RegExp, timeoutMs?: number) => Promise<RegExpExecArray>
  exit: Promise<number | null>
}

/** `main`: the monitor (default) or the install service (MANAGER_MAIN). */
export function startService(address: string, extra: string[] = [], main = HELPER_MAIN): Service {
  const child = spawn('setpriv', [`--reuid=${NOBODY.uid}`, `--regid=${NOBODY.gid}`, '--clear-groups', '--', process.execPath, main, '--test-mode', '--address', address, ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: {...process.env, HOME: '/'},
  })
  let log = ''
  const waiters: Array<() => void> = []
  child.stderr!.on('data', (c: Buffer) => {
    log += c.toString()
    for (const w of waiters.splice(0)) w()
  })
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const waitForLog = async (re: RegExp, timeoutMs = 10_000): Promise<RegExpExecArray> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const m = re.exec(log)
      if (m) return m
      if (Date.now() > deadline) throw new Error(`service log never matched ${re}; log:\n${log}`)
      await new Promise<void>((resolve) => {
        waiters.push(resolve)
        setTimeout(resolve, 100)
      })
    }
  }
  return {child, log: () => log, waitForLog, exit}
}
