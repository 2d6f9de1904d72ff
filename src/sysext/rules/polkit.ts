/**
 * polkit actions (JavaScript rules are refused by confinement). polkitd reads /usr/share/polkit-1 on the host, so
 * what an extension puts there is trusted as much as the distribution's own.
 */
import {type Finding, error, warning} from '../findings.js'
import {resolveMerged} from '../host.js'
import {childrenOf} from '../tree.js'
import {type RuleContext, type RuleSet, onHost} from './context.js'
import {type XmlElement, parseXml} from '../../formats/xml.js'

const ACTIONS_DIR = 'usr/share/polkit-1/actions'
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

const HOST_ACTION_DIRS = ['/usr/share/polkit-1/actions', '/usr/local/share/polkit-1/actions']

/** Action ids the host's own action files define (the extension's merged files excluded), with their file. */
function hostActions(ctx: RuleContext): Map<string, string> {
  const ids = new Map<string, string>()
  for (const dir of HOST_ACTION_DIRS) {
    for (const name of ctx.host.readdir(dir) ?? []) {
      const path = `${dir}/${name}`
      if (!name.endsWith('.policy') || !onHost(ctx, path)) continue
      const text = ctx.host.readText(path)
      const doc = text === undefined ? undefined : parseXml(text)
      if (!doc || !('root' in doc)) continue
      for (const action of doc.root.children) if (action.name === 'action' && action.attrs.id) ids.set(action.attrs.id, path)
    }
  }
  return ids
}

/** Every action id the tree defines. */
function treeActionIds(ctx: RuleContext): Set<string> {
  const ids = new Set<string>()
  for (const entry of childrenOf(ctx.tree, ACTIONS_DIR)) {
    const doc = entry.text === undefined ? undefined : parseXml(entry.text)
    if (doc && 'root' in doc) for (const action of doc.root.children) if (action.name === 'action' && action.attrs.id) ids.add(action.attrs.id)
  }
  return ids
}

/**
 * An action may only speak for the extension: an id the host does not define
 * (polkitd keeps one definition, so a second one can change the host's
 * defaults), `imply` only of its own actions, and `exec.path` (what pkexec runs
 * under this action) only of a program the tree ships.
 */
function checkConfined(ctx: RuleContext, file: string, root: XmlElement, host: Map<string, string>, own: Set<string>): Finding[] {
  const findings: Finding[] = []
  for (const action of root.children) {
    if (action.name !== 'action' || !action.attrs.id) continue
    const id = action.attrs.id
    const defined = host.get(id)
    if (defined)
      findings.push(error('polkit-action-host', file,
        `Line ${action.line}: action ${id} is already defined by the host (${defined}); a second definition can change who may do what the host's own service guards.`,
        'Define actions only under the app\'s own reverse-DNS id (e.g. org.example.App1.do-thing).'))
    for (const annotate of action.children.filter((c) => c.name === 'annotate')) {
      const key = annotate.attrs.key
      if (key === 'org.freedesktop.policykit.imply') {
        const outside = annotate.text.split(/\s+/).filter((a) => a !== '' && !own.has(a))
        if (outside.length > 0)
          findings.push(error('polkit-imply-outside', file,
            `Line ${annotate.line}: action ${id} implies ${outside.join(', ')}, which the extension does not define: whoever is granted ${id} would be granted those too.`,
            'Imply only actions the extension itself defines, or drop the annotation.'))
      } else if (key === 'org.freedesktop.policykit.exec.path') {
        const program = annotate.text.trim()
        const resolved = program.startsWith('/') ? resolveMerged(ctx.tree, ctx.host, program) : undefined
        if (!resolved || resolved.source !== 'tree')
          findings.push(error('polkit-exec-path-outside', file,
            `Line ${annotate.line}: action ${id} sets exec.path ${program}, which the extension does not ship: pkexec would run that program as root under the extension's defaults.`,
            'Point exec.path only at a program in the tree (usr/libexec/…), or drop the annotation.'))
      }
    }
  }
  return findings
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
  let host: Map<string, string> | undefined
  const own = treeActionIds(ctx)
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
    findings.push(...checkConfined(ctx, entry.path, doc.root, (host ??= hostActions(ctx)), own))
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
    'polkit-action-host': 'An action id the host already defines (a second definition can change the host\'s defaults).',
    'polkit-imply-outside': 'An org.freedesktop.policykit.imply annotation naming an action the extension does not define.',
    'polkit-exec-path-outside': 'An org.freedesktop.policykit.exec.path annotation naming a program the extension does not ship.',
  },
  check,
}
