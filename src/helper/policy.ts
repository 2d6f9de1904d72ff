/**
 * The admin's policy for app requests, /etc/sysext-helper/policy.conf, a key
 * file (the GKeyFile grammar of our other system files):
 *
 *   [Requests]
 *   # allow (default): an app may ask, the admin authenticates (auth_admin);
 *   # disabled: the Manager refuses every app request.
 *   Mode=allow
 *   # Apps, and remotes an app was installed from, whose own requests need no password.
 *   NoPasswordApps=org.gnome.Sysprof;
 *   NoPasswordRemotes=flathub;
 *
 * A missing file is the default. A broken one (unknown group/key/value, bad
 * syntax) is the safe default too, with one log line naming the file, line
 * and rule: app requests allowed, every one with the admin's password.
 */
import {readFileSync} from 'node:fs'
import {parseKeyFile} from '../formats/keyfile.js'

export const POLICY_PATH = '/etc/sysext-helper/policy.conf'

export interface RequestPolicy {
  mode: 'allow' | 'disabled'
  noPasswordApps: string[]
  noPasswordRemotes: string[]
}

export const DEFAULT_POLICY: RequestPolicy = {mode: 'allow', noPasswordApps: [], noPasswordRemotes: []}

const KEYS = new Set(['Mode', 'NoPasswordApps', 'NoPasswordRemotes'])

/** Parses the file's text; `problem` is set (and the default returned) when it is not a valid policy. */
export function parsePolicy(text: string, file = POLICY_PATH): {policy: RequestPolicy; problem?: string} {
  const broken = (line: number, why: string): {policy: RequestPolicy; problem: string} => ({
    policy: DEFAULT_POLICY,
    problem: `${file}:${line}: ${why}; using the safe default (app requests allowed, each one with the admin's password). Fix the file (see the README, "Requesting your helper from the app").`,
  })
  const parsed = parseKeyFile(text)
  if (parsed.problems.length > 0) return broken(parsed.problems[0].line, parsed.problems[0].message)
  const policy: RequestPolicy = {mode: 'allow', noPasswordApps: [], noPasswordRemotes: []}
  for (const group of parsed.groups) {
    if (group.name !== 'Requests') return broken(group.line, `unknown group [${group.name}] (only [Requests])`)
    for (const [key, {value, line}] of group.entries) {
      if (!KEYS.has(key)) return broken(line, `unknown key '${key}' (Mode, NoPasswordApps, NoPasswordRemotes)`)
      const list = value.split(';').map((v) => v.trim()).filter((v) => v !== '')
      if (key === 'Mode') {
        if (value !== 'allow' && value !== 'disabled') return broken(line, `Mode must be 'allow' or 'disabled', not '${value}'`)
        policy.mode = value
      } else if (key === 'NoPasswordApps') policy.noPasswordApps = list
      else policy.noPasswordRemotes = list
    }
  }
  return {policy}
}

/** Reads the policy now (every request: the admin's edit applies at once). */
export function readPolicy(file: string, log: (line: string) => void): RequestPolicy {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return DEFAULT_POLICY
    log(`policy: ${file} could not be read (${(err as Error).message}); using the safe default (app requests allowed, each one with the admin's password)`)
    return DEFAULT_POLICY
  }
  const {policy, problem} = parsePolicy(text, file)
  if (problem) log(`policy: ${problem}`)
  return policy
}
