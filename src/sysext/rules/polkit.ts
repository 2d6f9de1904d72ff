/**
 * polkit actions and rules. polkitd reads /usr/share/polkit-1 on the host, so
 * what an extension puts there is trusted as much as the distribution's own.
 */
import {type Finding, error, warning} from '../findings.js'
import {childrenOf} from '../tree.js'
import type {RuleContext, RuleSet} from './context.js'
import {type XmlElement, parseXml} from '../../formats/xml.js'

const ACTIONS_DIR = 'usr/share/polkit-1/actions'
const RULES_DIR = 'usr/share/polkit-1/rules.d'
const DEFAULT_KEYS = ['allow_any', 'allow_inactive', 'allow_active']
const AUTH_VALUES = ['no', 'yes', 'auth_self', 'auth_admin', 'auth_self_keep', 'auth_admin_keep']

/** Why `id` is not a polkit action id, or undefined when it is one. */
export function actionIdProblem(id: string): string | undefined {
  if (id === '') return 'is empty'
  // polkitd 122 and 126 accept '_' (checked with pkaction/pkcheck on the test hosts), as in io.github.foo_bar.
  if (!/^[A-Za-z0-9._-]+$/.test(id)) return 'has characters other than letters, digits, \'.\', \'_\' and \'-\''
  if (!id.includes('.')) return "has no '.'; action ids are reverse-DNS names such as org.example.App1.do-thing"
  if (id.startsWith('.') || id.endsWith('.')) return "starts or ends with '.'"
  return undefined
}

function checkActions(file: string, root: XmlElement, seen: Map<string, string>): Finding[] {
  const findings: Finding[] = []
  for (const action of root.children) {
    if (action.name !== 'action') continue
    const id = action.attrs.id
    const problem = id === undefined ? 'is missing' : actionIdProblem(id)
    if (problem) {
      findings.push(error('polkit-action-id-invalid', file, `Line ${action.line}: <action id="${id ?? ''}">: the id ${problem}.`,
        'Use a reverse-DNS id of letters, digits, \'.\', \'_\' and \'-\' that starts with the app\'s bus name, e.g. org.example.App1.configure.'))
      continue
    }
    const where = `${file}:${action.line}`
    const first = seen.get(id)
    if (first !== undefined)
      findings.push(error('polkit-action-duplicate', file, `Line ${action.line}: action ${id} is already defined at ${first}; polkitd keeps only one of them.`,
        'Give every action a unique id, or drop the duplicate.'))
    else seen.set(id, where)

    for (const defaults of action.children.filter((c) => c.name === 'defaults')) {
      for (const setting of defaults.children) {
        if (!DEFAULT_KEYS.includes(setting.name)) continue
        if (!AUTH_VALUES.includes(setting.text))
          findings.push(error('polkit-defaults-invalid', file,
            `Line ${setting.line}: <${setting.name}>${setting.text}</${setting.name}> in action ${id} is not one of ${AUTH_VALUES.join(', ')}.`,
            'Use auth_admin_keep unless the action is harmless for every local user.'))
        else if (setting.name === 'allow_any' && setting.text === 'yes')
          findings.push(warning('polkit-allow-any-yes', file,
            `Line ${setting.line}: <allow_any>yes</allow_any> in action ${id} grants it without authentication to every client, including remote (SSH) and background sessions.`,
            'Use <allow_any>auth_admin</allow_any> (or no), and yes only in <allow_active> for harmless actions.'))
      }
    }
  }
  return findings
}

function check(ctx: RuleContext): Finding[] {
  const findings: Finding[] = []
  const seen = new Map<string, string>()
  for (const entry of childrenOf(ctx.tree, ACTIONS_DIR)) {
    if (!entry.path.endsWith('.policy')) continue
    if (entry.readError !== undefined) {
      findings.push(error('polkit-policy-unreadable', entry.path, `polkit action file ${entry.path} cannot be read (${entry.readError}); it was not checked.`,
        'Make it a readable regular file (mode 0644, owned by root).'))
      continue
    }
    if (entry.text === undefined) continue
    const doc = parseXml(entry.text)
    if (!('root' in doc)) {
      findings.push(error('polkit-policy-xml', entry.path, `Line ${doc.line}: ${doc.message}; polkitd skips a malformed action file, so none of its actions exist.`,
        'Fix the XML (xmllint --noout FILE shows the same error).'))
      continue
    }
    if (doc.root.name !== 'policyconfig') {
      findings.push(error('polkit-policy-root', entry.path, `Root element is <${doc.root.name}>, not <policyconfig>; polkitd defines no actions from it.`,
        'Wrap the <action> elements in <policyconfig>.'))
      continue
    }
    findings.push(...checkActions(entry.path, doc.root, seen))
  }

  for (const entry of childrenOf(ctx.tree, RULES_DIR)) {
    if (!entry.path.endsWith('.rules')) continue
    findings.push(error('polkit-rules-file', entry.path,
      `${entry.path} is a polkit JavaScript rule; merged into /usr/share/polkit-1/rules.d it runs in polkitd for every authorization check on the host and can grant any action to anyone.`,
      'Remove it: declare actions with <defaults> in usr/share/polkit-1/actions, and leave rules to the administrator (/etc/polkit-1/rules.d).'))
  }
  return findings
}

export const polkitRules: RuleSet = {
  rules: {
    'polkit-policy-unreadable': 'A polkit action file cannot be read.',
    'polkit-policy-xml': 'A polkit action file is not well-formed XML.',
    'polkit-policy-root': 'A polkit action file\'s root element is not <policyconfig>.',
    'polkit-action-id-invalid': 'An <action> has a missing or invalid id.',
    'polkit-action-duplicate': 'The same action id is defined twice in the tree.',
    'polkit-defaults-invalid': 'An allow_any/allow_inactive/allow_active value is not a polkit authorization value.',
    'polkit-allow-any-yes': 'allow_any=yes grants an action to every client without authentication (warning).',
    'polkit-rules-file': 'The tree ships a polkit JavaScript rule in usr/share/polkit-1/rules.d.',
  },
  check,
}
