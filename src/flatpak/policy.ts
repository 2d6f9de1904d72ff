/**
 * The admin policy for Flatpak apps (/etc/sysext-helper/policy.conf). Without it
 * nothing is approved automatically: every app needs `sysext-helper install` or
 * `approve` by an admin.
 *
 *   [Approval]
 *   Apps=org.gnome.Sysprof;org.freedesktop.Bustle;
 *   Remotes=company-internal;
 */
import {readFileSync} from 'node:fs'
import {HelperError} from '../errors.js'
import {parseKeyFile} from '../formats/keyfile.js'
import type {AppDeploy} from './installations.js'

export interface ApprovalPolicy {
  file: string
  apps: string[]
  remotes: string[]
}

const list = (value: string | undefined): string[] => (value ?? '').split(';').map((v) => v.trim()).filter(Boolean)

export function readPolicy(file: string): ApprovalPolicy {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {file, apps: [], remotes: []}
    throw new HelperError('POLICY_UNREADABLE', `Cannot read the approval policy '${file}'.`, {file, cause: error})
  }
  const parsed = parseKeyFile(text)
  if (parsed.problems.length > 0)
    throw new HelperError('POLICY_INVALID', `${file}:${parsed.problems[0].line}: ${parsed.problems[0].message}.`, {
      file, hint: 'The policy is a key file with an [Approval] group holding Apps= and Remotes= lists separated by ";".',
    })
  const group = parsed.groups.find((g) => g.name === 'Approval')
  return {file, apps: list(group?.entries.get('Apps')?.value), remotes: list(group?.entries.get('Remotes')?.value)}
}

/** Why the policy approves `app`, or undefined. */
export function policyApproves(policy: ApprovalPolicy, app: AppDeploy): string | undefined {
  if (policy.apps.includes(app.appId)) return `listed in ${policy.file}`
  if (app.origin && policy.remotes.includes(app.origin)) return `installed from remote '${app.origin}', approved in ${policy.file}`
  return undefined
}
