/**
 * D-Bus system service files and bus policies. Flatpak never exports these,
 * which is why an app ships them in a system extension; a mistake here means
 * the service is not activatable, and a wide policy opens the system bus.
 */
import {parseUnitFile, unitValues} from '../../formats/unit-file.js'
import {type Finding, error, warning} from '../findings.js'
import {resolveMerged} from '../host.js'
import {parseKeyFile} from '../../formats/keyfile.js'
import {type Tree, childrenOf} from '../tree.js'
import {type XmlElement, descendants, parseXml} from '../../formats/xml.js'
import {type RuleContext, type RuleSet, onHost} from './context.js'

const SERVICES_DIR = 'usr/share/dbus-1/system-services'
const POLICY_DIR = 'usr/share/dbus-1/system.d'
export const UNITS_DIR = 'usr/lib/systemd/system'
const GROUP = 'D-BUS Service'

/**
 * Why `name` is not a well-known bus name (D-Bus specification, "Bus names"),
 * or undefined when it is one.
 */
export function busNameProblem(name: string): string | undefined {
  if (name.length > 255) return 'is longer than 255 characters'
  if (name.startsWith(':')) return 'is a unique connection name, not a well-known name'
  if (name.startsWith('.')) return "starts with '.'"
  const elements = name.split('.')
  if (elements.length < 2) return "has a single element; a bus name needs at least two, separated by '.'"
  if (elements.some((e) => e === '')) return 'has an empty element'
  const bad = elements.find((e) => !/^[A-Za-z_-][A-Za-z0-9_-]*$/.test(e))
  if (bad !== undefined) return `has an invalid element '${bad}' (elements are [A-Za-z_-][A-Za-z0-9_-]*)`
  return undefined
}


/** The first word of an Exec= line with the shell quoting dbus-daemon applies (_dbus_shell_parse_argv). */
function shellFirstWord(value: string): string | undefined {
  let word = ''
  let quote: string | undefined
  for (let i = value.search(/\S|$/); i < value.length; i++) {
    const c = value[i]
    if (quote === "'") {
      if (c === "'") quote = undefined
      else word += c
    } else if (c === '\\' && (quote === undefined || '"\\$`'.includes(value[i + 1] ?? ''))) {
      if (i + 1 >= value.length) return undefined
      word += value[++i]
    } else if (quote === '"') {
      if (c === '"') quote = undefined
      else word += c
    } else if (c === '"' || c === "'") {
      quote = c
    } else if (/\s/.test(c)) {
      break
    } else {
      word += c
    }
  }
  return quote ? undefined : word
}

/** Where a unit named `unit` is found after the merge: the tree's units, then the host's unit directories. */
function findUnit(ctx: RuleContext, unit: string): boolean {
  const template = /^([^@]+@).+(\.[a-z]+)$/.exec(unit)
  const names = template ? [unit, `${template[1]}${template[2]}`] : [unit]
  return names.some((name) => ['/etc/systemd/system', '/usr/lib/systemd/system', '/lib/systemd/system']
    .some((dir) => resolveMerged(ctx.tree, ctx.host, `${dir}/${name}`) !== undefined))
}

/** Unit file name in the tree that declares `alias` in [Install] Alias=. */
function unitWithAlias(tree: Tree, alias: string): string | undefined {
  for (const entry of childrenOf(tree, UNITS_DIR)) {
    if (entry.text === undefined) continue
    const aliases = unitValues(parseUnitFile(entry.text), 'Install', 'Alias').flatMap((a) => a.value.split(/\s+/))
    if (aliases.includes(alias)) return entry.path.slice(UNITS_DIR.length + 1)
  }
  return undefined
}

/** Whether the host already uses a bus name: a system service file or a bus policy of its own names it. */
export function hostBusNameSource(ctx: RuleContext, name: string): string | undefined {
  for (const dir of ['/usr/share/dbus-1/system-services', '/usr/local/share/dbus-1/system-services', '/lib/dbus-1/system-services']) {
    if (onHost(ctx, `${dir}/${name}.service`)) return `${dir}/${name}.service`
  }
  for (const dir of ['/usr/share/dbus-1/system.d', '/etc/dbus-1/system.d']) {
    for (const file of ctx.host.readdir(dir) ?? []) {
      const path = `${dir}/${file}`
      if (!file.endsWith('.conf') || !onHost(ctx, path)) continue
      const text = ctx.host.readText(path)
      if (text !== undefined && new RegExp(`own(_prefix)?\\s*=\\s*["']${name.replace(/\./g, '\\.')}["']`).test(text)) return path
    }
  }
  return undefined
}

/**
 * The bus names an extension declares as its own: its service files' Name= and
 * its units' BusName= (a service started by other means still takes its name).
 */
export function declaredBusNames(tree: Tree): Set<string> {
  const names = new Set(serviceFiles(tree).map((s) => s.name))
  for (const entry of childrenOf(tree, UNITS_DIR)) {
    if (entry.text === undefined || !entry.path.endsWith('.service')) continue
    for (const {value} of unitValues(parseUnitFile(entry.text), 'Service', 'BusName')) names.add(value)
  }
  return new Set([...names].filter((n) => !busNameProblem(n)))
}

export interface ServiceFile {
  file: string
  name: string
  user: string | undefined
  systemdService: string | undefined
}

/** The tree's system service files with a Name= (valid or not), for cross-checks. */
export function serviceFiles(tree: Tree): ServiceFile[] {
  const out: ServiceFile[] = []
  for (const entry of childrenOf(tree, SERVICES_DIR)) {
    if (!entry.path.endsWith('.service') || entry.text === undefined) continue
    const group = parseKeyFile(entry.text).groups.find((g) => g.name === GROUP)
    const name = group?.entries.get('Name')?.value
    if (name !== undefined)
      out.push({file: entry.path, name, user: group?.entries.get('User')?.value, systemdService: group?.entries.get('SystemdService')?.value})
  }
  return out
}

function checkService(ctx: RuleContext, file: string, text: string): Finding[] {
  const findings: Finding[] = []
  const base = file.slice(SERVICES_DIR.length + 1)
  const keyFile = parseKeyFile(text)
  for (const problem of keyFile.problems)
    findings.push(error('dbus-service-syntax', file, `Line ${problem.line}: ${problem.message}; dbus does not load a service file with syntax errors.`,
      'Fix the line: service files are key files with [D-BUS Service] and Key=value lines.'))
  const group = keyFile.groups.find((g) => g.name === GROUP)
  if (!group) {
    findings.push(error('dbus-service-group-missing', file, `${base} has no [${GROUP}] group; dbus ignores it.`,
      `Start the file with [${GROUP}] followed by Name=, Exec=, User= and SystemdService=.`))
    return findings
  }
  const value = (key: string): string | undefined => group.entries.get(key)?.value

  const name = value('Name')
  const expected = base.slice(0, -'.service'.length)
  if (name === undefined) {
    findings.push(error('dbus-service-name-missing', file, `${base} has no Name=; dbus cannot activate it.`,
      `Add Name=${expected}.`))
  } else {
    const problem = busNameProblem(name)
    if (problem)
      findings.push(error('dbus-service-name-invalid', file, `Name=${name} ${problem}; it is not a valid well-known bus name.`,
        'Use a reverse-DNS name such as org.example.App1, and name the file after it.'))
    if (name !== expected)
      findings.push(error('dbus-service-name-mismatch', file, `Name=${name} does not match the file name '${base}'; dbus will not activate it.`,
        `Rename the file to '${name}.service' or set Name=${expected}.`))
  }

  const user = value('User')
  const unit = value('SystemdService')
  if (user === undefined) {
    const hint = 'Add User= with the account the service runs as (User=root when the unit drops privileges itself).'
    const bus = ctx.host.bus
    // dbus-daemon refuses a service-file-only activation without User= ("Cannot do system-bus activation with no user");
    // through SystemdService= it hands the start to systemd, and dbus-broker activates either way (REFERENCE §2).
    if (unit === undefined && bus !== 'dbus-broker')
      findings.push(error('dbus-service-user-missing', file,
        `${base} has no User= and no SystemdService=; this host's ${bus === 'unknown' ? 'bus (dbus-daemon assumed)' : 'dbus-daemon'} refuses the activation ("Cannot do system-bus activation with no user").`, hint))
    else
      findings.push(warning('dbus-service-user-missing', file,
        unit !== undefined
          ? `${base} has no User=; activation works because it goes through SystemdService=${unit} (the unit decides the user), but dbus-daemon would refuse it if started without systemd.`
          : `${base} has no User= and no SystemdService=; this host's dbus-broker activates it anyway (as root), but dbus-daemon hosts refuse it.`, hint))
  }
  else if (user === 'root' && unit === undefined)
    findings.push(warning('dbus-service-root-without-unit', file,
      `User=root without SystemdService=: dbus starts ${value('Exec') ?? 'the service'} as root itself, outside any unit, with no sandboxing, resource limits or journal identity.`,
      'Ship a unit in usr/lib/systemd/system and point SystemdService= at it, so systemd starts and confines the service.'))

  const exec = value('Exec')
  if (exec === undefined) {
    findings.push(error('dbus-service-exec-missing', file, `${base} has no Exec=; dbus-daemon does not load it.`,
      unit ? 'Add Exec=/bin/false when the service is only started through SystemdService=.' : 'Add Exec= with the absolute path of the service binary.'))
  } else {
    const binary = shellFirstWord(exec)
    if (binary === undefined || !binary.startsWith('/')) {
      findings.push(error('dbus-service-exec-invalid', file,
        binary === undefined ? `Exec=${exec} has unbalanced quotes.` : `Exec=${exec} does not start with an absolute path; the system bus does not search PATH.`,
        'Start Exec= with the absolute path of the binary, e.g. Exec=/usr/libexec/org.example.App1-helper.'))
    } else {
      const resolved = resolveMerged(ctx.tree, ctx.host, binary)
      const problem = resolved === undefined ? 'does not exist in the tree or on the host'
        : resolved.type !== 'file' ? `is not a regular file (${resolved.path})`
          : (resolved.mode & 0o111) === 0 ? `is not executable (${resolved.path}, mode ${(resolved.mode & 0o7777).toString(8).padStart(4, '0')})`
            : undefined
      if (problem) {
        const hint = 'Ship the binary under usr/ in the tree (mode 0755) or point Exec= at one the host has.'
        findings.push(unit
          ? warning('dbus-service-exec-not-found', file, `Exec=${exec}: ${binary} ${problem}; only used if the bus starts the service without systemd.`, hint)
          : error('dbus-service-exec-not-found', file, `Exec=${exec}: ${binary} ${problem}; activation fails.`, hint))
      }
    }
  }

  if (unit !== undefined && !findUnit(ctx, unit)) {
    const declaring = unitWithAlias(ctx.tree, unit)
    if (declaring)
      findings.push(warning('dbus-service-unit-alias', file,
        `SystemdService=${unit} is only an Alias= of ${declaring}; the alias exists after 'systemctl enable ${declaring}', so activation fails until then.`,
        `Set SystemdService=${declaring}, or enable ${declaring} when installing.`))
    else
      findings.push(error('dbus-service-unit-missing', file,
        `SystemdService=${unit} is neither in the tree's usr/lib/systemd/system nor in the host's /usr/lib/systemd/system, /lib/systemd/system or /etc/systemd/system; activation fails.`,
        `Ship ${unit} in usr/lib/systemd/system, or fix the name.`))
  } else if (unit !== undefined && !ctx.tree.entries.has(`${UNITS_DIR}/${unit}`) && !unitWithAlias(ctx.tree, unit)) {
    const template = /^([^@]+@).+(\.[a-z]+)$/.exec(unit)
    if (!template || !ctx.tree.entries.has(`${UNITS_DIR}/${template[1]}${template[2]}`))
      findings.push(error('dbus-service-unit-host', file,
        `SystemdService=${unit} is a unit of the host, not of the extension: every client that asks for ${base.slice(0, -'.service'.length)} would start the host's ${unit}.`,
        `Ship the unit that serves the name in usr/lib/systemd/system and point SystemdService= at it.`))
  }
  return findings
}

/** `allow` rules that let the bus name be owned: exact own= or an own_prefix= covering it. */
function owns(allow: XmlElement, name: string): boolean {
  const {own, own_prefix: prefix} = allow.attrs
  return own === name || (prefix !== undefined && (name === prefix || name.startsWith(`${prefix}.`)))
}

/**
 * `value` is one of the extension's names or lies under one: names below a name
 * the host does not have (dbus-service-name-host) are the extension's namespace.
 */
function bound(value: string | undefined, names: Set<string>, prefix = false): boolean {
  if (value === undefined) return false
  return [...names].some((n) => value === n || (prefix && value.startsWith(`${n}.`)))
}

function policyWho(policy: XmlElement): string {
  return Object.entries(policy.attrs).map(([k, v]) => `${k}="${v}"`).join(' ') || '(no attributes)'
}

/**
 * Why one <allow>/<deny> rule is not confined to the extension's own names, or
 * undefined when it is. dbus applies a rule to every message it matches, so an
 * attribute left out widens it to all of them: the rule must name the
 * destination (send), the sender (receive) or the name (own) it is about.
 */
function unboundRule(rule: XmlElement, names: Set<string>): string | undefined {
  const a = rule.attrs
  const keys = Object.keys(a)
  if ('user' in a || 'group' in a)
    return 'a connection rule (user=/group= on a rule) decides who may connect to the system bus at all'
  if ('own' in a || 'own_prefix' in a) {
    if (!bound(a.own, names, true) && !bound(a.own_prefix, names, true))
      return `it is about owning ${a.own !== undefined ? `'${a.own}'` : `every name under '${a.own_prefix}'`}, which no service file of the extension declares (its names: ${[...names].join(', ') || 'none'})`
    return undefined
  }
  const send = keys.some((k) => k.startsWith('send_'))
  const receive = keys.some((k) => k.startsWith('receive_'))
  if (send && !bound(a.send_destination, names, true) && !bound(a.send_destination_prefix, names, true))
    return a.send_destination !== undefined || a.send_destination_prefix !== undefined
      ? `it is about messages to '${a.send_destination ?? a.send_destination_prefix}', which is not a name of the extension`
      : 'it has no send_destination=, so it applies to messages to every service on the bus'
  if (receive && !bound(a.receive_sender, names, true))
    return a.receive_sender !== undefined
      ? `it is about messages from '${a.receive_sender}', which is not a name of the extension`
      : 'it has no receive_sender=, so it applies to messages from every service on the bus'
  if (!send && !receive) return 'it names no destination, sender or name, so it applies to everything'
  return undefined
}

function checkPolicy(file: string, root: XmlElement, names: Set<string>): Finding[] {
  const findings: Finding[] = []
  const hint = `A bus policy may only own the extension's names and allow or deny messages to them (send_destination=) or from them (receive_sender=); its names: ${[...names].join(', ') || 'none (the tree has no service file)'}.`
  for (const element of descendants(root)) {
    if (element.name === 'allow' && element.attrs.eavesdrop === 'true')
      findings.push(error('bus-policy-eavesdrop', file,
        `Line ${element.line}: <allow eavesdrop="true"> lets its users read messages addressed to others on the system bus.`,
        'Remove eavesdrop="true"; monitoring belongs to root through BecomeMonitor.'))
  }
  for (const policy of root.children) {
    if (policy.name !== 'policy') {
      findings.push(error('bus-policy-element', file,
        `Line ${policy.line}: <${policy.name}> configures the bus itself (limits, included files, service directories, listening addresses), not the extension's service.`,
        'Keep only <policy> elements with <allow>/<deny> rules about the extension\'s own names.'))
      continue
    }
    if (policy.attrs.context === 'mandatory') {
      findings.push(error('bus-policy-mandatory', file,
        `Line ${policy.line}: <policy context="mandatory"> overrides every other policy on the bus, the host's own included.`,
        'Use <policy context="default"> (for everyone) or <policy user="…"> for the service\'s rules.'))
      continue
    }
    for (const rule of policy.children) {
      if (rule.name !== 'allow' && rule.name !== 'deny') {
        findings.push(error('bus-policy-element', file, `Line ${rule.line}: <${rule.name}> inside <policy> is not a rule dbus knows; the whole file may be rejected.`,
          'Use only <allow> and <deny> inside <policy>.'))
        continue
      }
      const why = unboundRule(rule, names)
      if (why)
        findings.push(error('bus-policy-unbound', file,
          `Line ${rule.line}: <${rule.name} ${Object.entries(rule.attrs).map(([k, v]) => `${k}="${v}"`).join(' ')}> in <policy ${policyWho(policy)}> reaches beyond the extension: ${why}.`,
          hint))
    }
  }
  return findings
}

function check(ctx: RuleContext): Finding[] {
  const findings: Finding[] = []
  for (const entry of childrenOf(ctx.tree, SERVICES_DIR)) {
    if (!entry.path.endsWith('.service')) continue
    if (entry.readError !== undefined)
      findings.push(error('dbus-service-unreadable', entry.path, `D-Bus service file ${entry.path} cannot be read (${entry.readError}); it was not checked.`,
        'Make it a readable regular file (mode 0644, owned by root).'))
    else if (entry.text !== undefined) findings.push(...checkService(ctx, entry.path, entry.text))
  }

  const declared = declaredBusNames(ctx.tree)
  for (const service of serviceFiles(ctx.tree)) {
    if (!declared.has(service.name)) continue
    const source = hostBusNameSource(ctx, service.name)
    if (source)
      findings.push(error('dbus-service-name-host', service.file,
        `${service.name} is already a name of the host (${source}); whoever owns it receives the calls meant for the host's service, root's included.`,
        'Use a bus name of the app\'s own (its reverse-DNS app id, e.g. org.example.App1.Helper).'))
  }

  const policies: {file: string; root: XmlElement}[] = []
  for (const entry of childrenOf(ctx.tree, POLICY_DIR)) {
    if (!entry.path.endsWith('.conf')) continue
    if (entry.readError !== undefined) {
      findings.push(error('bus-policy-unreadable', entry.path, `Bus policy ${entry.path} cannot be read (${entry.readError}); it was not checked.`,
        'Make it a readable regular file (mode 0644, owned by root).'))
      continue
    }
    if (entry.text === undefined) continue
    const doc = parseXml(entry.text)
    if (!('root' in doc)) {
      findings.push(error('bus-policy-xml', entry.path, `Line ${doc.line}: ${doc.message}; dbus skips a malformed policy file, so none of its rules apply.`,
        'Fix the XML (xmllint --noout FILE shows the same error).'))
      continue
    }
    if (doc.root.name !== 'busconfig') {
      findings.push(error('bus-policy-root', entry.path, `Root element is <${doc.root.name}>, not <busconfig>; dbus does not load it as a bus policy.`,
        'Wrap the <policy> elements in <busconfig>.'))
      continue
    }
    policies.push({file: entry.path, root: doc.root})
    findings.push(...checkPolicy(entry.path, doc.root, declared))
  }

  for (const service of serviceFiles(ctx.tree)) {
    if (busNameProblem(service.name)) continue
    const allows = policies.flatMap((p) => descendants(p.root)).filter((e) => e.name === 'allow')
    if (allows.some((allow) => owns(allow, service.name))) continue
    const mentioned = allows.some((allow) => Object.values(allow.attrs).includes(service.name))
    findings.push(warning('bus-policy-name-not-owned', service.file,
      mentioned
        ? `The bus policies in ${POLICY_DIR} mention ${service.name} but none allows owning it; the started service cannot own its name, so activation fails.`
        : `No bus policy in ${POLICY_DIR} mentions ${service.name}; the started service cannot own its name and callers are denied (AccessDenied).`,
      `Ship ${POLICY_DIR}/${service.name}.conf with <policy user="${service.user ?? 'root'}"><allow own="${service.name}"/></policy> and <policy context="default"><allow send_destination="${service.name}"/></policy>.`))
  }
  return findings
}

export const dbusRules: RuleSet = {
  rules: {
    'dbus-service-unreadable': 'A D-Bus system service file cannot be read.',
    'dbus-service-syntax': 'A D-Bus system service file has key-file syntax errors.',
    'dbus-service-group-missing': 'A D-Bus system service file has no [D-BUS Service] group.',
    'dbus-service-name-missing': 'A D-Bus system service file has no Name=.',
    'dbus-service-name-invalid': 'Name= is not a valid well-known bus name.',
    'dbus-service-name-mismatch': 'Name= differs from the file name without .service (the system bus will not activate it).',
    'dbus-service-user-missing': 'A D-Bus system service file has no User= (an error where the host\'s bus refuses it: dbus-daemon without SystemdService=; else a warning).',
    'dbus-service-root-without-unit': 'User=root without SystemdService=: dbus runs the service as root outside any unit (warning).',
    'dbus-service-exec-missing': 'A D-Bus system service file has no Exec=.',
    'dbus-service-exec-invalid': 'Exec= does not start with an absolute path.',
    'dbus-service-exec-not-found': 'The Exec= binary is missing or not executable after the merge (warning when SystemdService= starts it instead).',
    'dbus-service-unit-missing': 'The SystemdService= unit is neither in the tree nor on the host.',
    'dbus-service-unit-host': 'SystemdService= names a host unit: activating the extension\'s name would start the host\'s unit.',
    'dbus-service-unit-alias': 'The SystemdService= unit exists only as an Alias= of a tree unit, i.e. after it is enabled (warning).',
    'bus-policy-unreadable': 'A bus policy file in dbus-1/system.d cannot be read.',
    'bus-policy-xml': 'A bus policy file is not well-formed XML.',
    'bus-policy-root': 'A bus policy file\'s root element is not <busconfig>.',
    'dbus-service-name-host': 'A service file for a bus name the host already has (a service file or a bus policy of the host owns it).',
    'bus-policy-unbound': 'A bus policy rule not confined to the extension\'s own names (own= of another name, send_* without its send_destination=, receive_* without its receive_sender=, connection rules).',
    'bus-policy-mandatory': 'A <policy context="mandatory">, which overrides every policy on the bus.',
    'bus-policy-element': 'A bus policy element other than <policy> with <allow>/<deny> (limits, includes, service directories, ...).',
    'bus-policy-eavesdrop': 'A policy allows eavesdropping (eavesdrop="true").',
    'bus-policy-name-not-owned': 'A bus name of a tree service file is not owned by any <allow own>/own_prefix in the tree\'s policies (warning).',
  },
  check,
}
