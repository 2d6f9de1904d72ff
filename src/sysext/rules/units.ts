/**
 * systemd units the extension ships in usr/lib/systemd/system. They are
 * loaded by the host's systemd after the merge (and a daemon-reload), so
 * everything they run must exist in the merged /usr or on the host.
 */
import {type UnitFile, parseExecCommand, parseUnitFile, unitValue, unitValues} from '../../formats/unit-file.js'
import {type Finding, error, warning} from '../findings.js'
import {type Resolved, resolveMerged} from '../host.js'
import type {Host} from '../host.js'
import {childrenOf} from '../tree.js'
import {type RuleContext, type RuleSet, onHost} from './context.js'
import {UNITS_DIR, busNameProblem, serviceFiles} from './dbus.js'

const UNIT_SUFFIX = /\.(service|socket|target|device|mount|automount|swap|timer|path|slice|scope)$/

/** Settings holding command lines, per section (systemd.service(5), systemd.socket(5)). */
const EXEC_KEYS: Record<string, string[]> = {
  Service: ['ExecCondition', 'ExecStartPre', 'ExecStart', 'ExecStartPost', 'ExecReload', 'ExecStop', 'ExecStopPost'],
  Socket: ['ExecStartPre', 'ExecStartPost', 'ExecStopPre', 'ExecStopPost'],
}

/** systemd's compiled-in search path for bare executable names (split-usr directories included). */
const DEFAULT_SEARCH_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']

function isExecutable(resolved: Resolved | undefined): boolean {
  return resolved !== undefined && resolved.type === 'file' && (resolved.mode & 0o111) !== 0
}

/** Why `resolved` cannot be executed, or undefined when it can. */
function execProblem(path: string, resolved: Resolved | undefined): string | undefined {
  if (resolved === undefined) return `${path} does not exist in the tree or on the host`
  if (resolved.type !== 'file') return `${path} is not a regular file (${resolved.path})`
  if ((resolved.mode & 0o111) === 0)
    return `${path} is not executable (${resolved.path}, mode ${(resolved.mode & 0o7777).toString(8).padStart(4, '0')})`
  return undefined
}

function checkExec(ctx: RuleContext, file: string, unit: UnitFile): Finding[] {
  const findings: Finding[] = []
  // A unit running in another root resolves its commands there, which this check cannot see.
  const ownRoot = ['RootDirectory', 'RootImage'].some((key) => unitValue(unit, 'Service', key) !== undefined)
  const searchPath = unitValue(unit, 'Service', 'ExecSearchPath')?.value.split(':').filter((d) => d.startsWith('/')) ?? DEFAULT_SEARCH_PATH
  for (const [section, keys] of Object.entries(EXEC_KEYS)) {
    for (const key of keys) {
      for (const {value, line} of unitValues(unit, section, key)) {
        const cmd = parseExecCommand(value)
        if ('error' in cmd) {
          findings.push(error('unit-exec-invalid', file, `Line ${line}: ${key}=${value}: ${cmd.error}; systemd refuses the command line.`,
            'Start the command with an absolute, normalized path to the binary (prefixes -@:+! allowed).'))
          continue
        }
        if (cmd.viaShell || ownRoot || cmd.path.includes('%')) continue
        let shown = cmd.path
        let resolved: Resolved | undefined
        if (cmd.path.startsWith('/')) {
          resolved = resolveMerged(ctx.tree, ctx.host, cmd.path)
        } else {
          const candidates = searchPath.map((dir) => ({path: `${dir}/${cmd.path}`, resolved: resolveMerged(ctx.tree, ctx.host, `${dir}/${cmd.path}`)}))
          const found = candidates.find((c) => isExecutable(c.resolved)) ?? candidates.find((c) => c.resolved !== undefined)
          if (found) {
            shown = found.path
            resolved = found.resolved
          } else {
            shown = `${cmd.path} (searched ${searchPath.join(':')})`
          }
        }
        const problem = execProblem(shown, resolved)
        if (!problem) continue
        findings.push(cmd.ignoreFailure
          ? warning('unit-exec-missing', file, `Line ${line}: ${key}=${value}: ${problem}; systemd skips the command ('-' prefix).`,
            'Ship the binary under usr/ in the tree (mode 0755), or drop the command.')
          : error('unit-exec-missing', file, `Line ${line}: ${key}=${value}: ${problem}; the unit fails with status 203/EXEC.`,
            'Ship the binary under usr/ in the tree (mode 0755), or point the command at one the host has.'))
      }
    }
  }
  return findings
}

/** systemd's service_verify() refusals, and the D-Bus wiring of BusName=. */
function checkService(ctx: RuleContext, file: string, unit: UnitFile): Finding[] {
  const findings: Finding[] = []
  const name = file.slice(UNITS_DIR.length + 1)
  const busName = unitValue(unit, 'Service', 'BusName')
  const execStart = unitValues(unit, 'Service', 'ExecStart')
  const type = unitValue(unit, 'Service', 'Type')?.value ?? (busName ? 'dbus' : execStart.length > 0 ? 'simple' : 'oneshot')
  const refuse = (message: string, hint: string): void => {
    findings.push(error('unit-service-exec-start', file, `${message} systemd refuses to load ${name}.`, hint))
  }
  const successAction = unitValue(unit, 'Unit', 'SuccessAction')?.value
  if (execStart.length === 0 && unitValues(unit, 'Service', 'ExecStop').length === 0 && (successAction ?? 'none') === 'none')
    refuse('Service has no ExecStart=, ExecStop= or SuccessAction=.', 'Add ExecStart= with the command the service runs.')
  else if (type !== 'oneshot' && execStart.length === 0)
    refuse(`Service has no ExecStart=, which only Type=oneshot allows (Type=${type}).`, 'Add ExecStart=, or set Type=oneshot.')
  else if (type !== 'oneshot' && execStart.length > 1)
    refuse(`Service has ${execStart.length} ExecStart= lines (lines ${execStart.map((e) => e.line).join(', ')}), which only Type=oneshot allows (Type=${type}).`,
      'Keep one ExecStart= and move the others to ExecStartPre=/ExecStartPost=.')

  if (busName === undefined) {
    if (type === 'dbus')
      findings.push(error('unit-dbus-bus-name-missing', file, `Type=dbus without BusName=; systemd refuses to load ${name}.`,
        'Add BusName= with the well-known name the service takes on the system bus.'))
    return findings
  }
  const problem = busNameProblem(busName.value)
  if (problem) {
    findings.push(error('unit-bus-name-invalid', file, `Line ${busName.line}: BusName=${busName.value} ${problem}; systemd ignores it${type === 'dbus' ? ` and then refuses Type=dbus` : ''}.`,
      'Use the reverse-DNS well-known name the service requests, e.g. BusName=org.example.App1.'))
    return findings
  }
  if (name.includes('@')) return findings
  const names = [name, ...unitValues(unit, 'Install', 'Alias').flatMap((a) => a.value.split(/\s+/))]
  const services = serviceFiles(ctx.tree).filter((s) => s.name === busName.value)
  if (services.some((s) => s.systemdService !== undefined && names.includes(s.systemdService))) return findings
  findings.push(warning('unit-bus-name-not-activatable', file,
    services.length > 0
      ? `Line ${busName.line}: BusName=${busName.value}, but ${services[0].file} does not set SystemdService=${name}; bus activation runs its Exec= outside this unit.`
      : `Line ${busName.line}: BusName=${busName.value}, but no D-Bus service file in the tree activates it through ${name}; the service runs only when enabled or started explicitly.`,
    `Ship usr/share/dbus-1/system-services/${busName.value}.service with SystemdService=${name}.`))
  return findings
}

/** Where the host's systemd looks for units, in its order. */
const HOST_UNIT_DIRS = ['/etc/systemd/system', '/run/systemd/system', '/usr/local/lib/systemd/system', '/usr/lib/systemd/system', '/lib/systemd/system']
const DEPENDENCY_LINE = /^\s*(Wants|Requires|Requisite|BindsTo|Upholds|PartOf|OnFailure|OnSuccess|Also|Unit|Service|Sockets|WantedBy|RequiredBy)\s*=(.*)$/gm

/** Per host: unit name -> where the host already names it as something to start (a .wants link, a dependency line). */
const hostReferenceCache = new WeakMap<Host, Map<string, string>>()
function hostReferences(ctx: RuleContext): Map<string, string> {
  const cached = hostReferenceCache.get(ctx.host)
  if (cached) return cached
  const refs = new Map<string, string>()
  for (const dir of HOST_UNIT_DIRS) {
    for (const name of ctx.host.readdir(dir) ?? []) {
      const path = `${dir}/${name}`
      if (/\.(wants|requires|upholds)$/.test(name)) {
        for (const linked of ctx.host.readdir(path) ?? []) if (!refs.has(linked) && onHost(ctx, `${path}/${linked}`)) refs.set(linked, `${path}/${linked}`)
      } else if (UNIT_SUFFIX.test(name) && onHost(ctx, path)) {
        const text = ctx.host.readText(path)
        for (const m of text?.matchAll(DEPENDENCY_LINE) ?? []) for (const unit of m[2].trim().split(/\s+/)) if (unit && !refs.has(unit)) refs.set(unit, `${path} (${m[1]}=)`)
      }
    }
  }
  // A host service file whose SystemdService= unit is missing would start the extension's unit of that name.
  for (const dir of ['/usr/share/dbus-1/system-services', '/usr/local/share/dbus-1/system-services']) {
    for (const file of ctx.host.readdir(dir) ?? []) {
      const path = `${dir}/${file}`
      if (!onHost(ctx, path)) continue
      const unit = /^\s*SystemdService\s*=\s*(\S+)/m.exec(ctx.host.readText(path) ?? '')?.[1]
      if (unit && !refs.has(unit)) refs.set(unit, `${path} (SystemdService=)`)
    }
  }
  hostReferenceCache.set(ctx.host, refs)
  return refs
}

/** Settings through which starting, stopping or failing one unit acts on others. */
const ACTS_ON_OTHERS = ['Conflicts', 'OnFailure', 'OnSuccess', 'PropagatesReloadTo', 'ReloadPropagatedFrom', 'PropagatesStopTo', 'StopPropagatedFrom', 'Upholds', 'JoinsNamespaceOf']
const INSTALL_KEYS = ['WantedBy', 'RequiredBy', 'UpheldBy', 'Also', 'Alias']
/** Settings through which starting a unit starts others too. */
const PULLS_IN = ['Wants', 'Requires', 'Requisite', 'BindsTo', 'PartOf']
/**
 * Host units a service may pull in: synchronization points and the bus, which are
 * running on any booted host anyway. Anything else (debug-shell.service,
 * reboot.target, a display manager) would be started for whoever activates the service.
 */
const PASSIVE_HOST_UNITS = new Set([
  'basic.target', 'sysinit.target', 'sockets.target', 'paths.target', 'timers.target', 'local-fs.target', 'remote-fs.target',
  'network.target', 'network-pre.target', 'network-online.target', 'nss-lookup.target', 'nss-user-lookup.target',
  'time-set.target', 'time-sync.target', 'dbus.socket', 'dbus.service', 'polkit.service', 'systemd-journald.socket',
])

/**
 * A unit of the extension is confined to the extension: a name new to the host
 * (and not already named by a host unit or .wants link, which would start it),
 * started on demand (through a service file's SystemdService= or another of the
 * tree's units), with no [Install] enablement unless granted, and no setting
 * that stops, starts or reloads host units along with it.
 */
function checkConfined(ctx: RuleContext, file: string, unit: UnitFile, treeUnits: Set<string>, referenced: Set<string>): Finding[] {
  const findings: Finding[] = []
  const name = file.slice(UNITS_DIR.length + 1)
  const bootUnits = (ctx.allow ?? []).includes('boot-units')
  const hostCopy = HOST_UNIT_DIRS.find((dir) => onHost(ctx, `${dir}/${name}`))
  if (hostCopy)
    findings.push(error('unit-name-host', file, `${name} is already a unit of the host (${hostCopy}/${name}); the extension's copy would replace or fight the host's.`,
      'Name units after the app (e.g. org.example.App1-helper.service).'))
  const reference = hostReferences(ctx).get(name)
  if (reference && !hostCopy)
    findings.push(error('unit-host-reference', file, `The host already names ${name} to be started (${reference}); once merged, the host would start it by itself.`,
      'Name the unit after the app, so nothing on the host refers to it.'))
  for (const key of INSTALL_KEYS) {
    for (const {value, line} of unitValues(unit, 'Install', key)) {
      const hostNames = key === 'Alias' ? value.split(/\s+/).filter((a) => a && HOST_UNIT_DIRS.some((dir) => onHost(ctx, `${dir}/${a}`)))
        : key === 'Also' ? value.split(/\s+/).filter((a) => a && !treeUnits.has(a)) : []
      if (hostNames.length > 0)
        findings.push(error('unit-alias-host', file, key === 'Alias'
          ? `Line ${line}: Alias=${value} names the host's ${hostNames.join(', ')}; enabling ${name} would replace it.`
          : `Line ${line}: Also=${value} names ${hostNames.join(', ')}, which the extension does not ship; enabling ${name} would enable the host's unit too.`,
        `Drop the ${key}=.`))
      else if (!bootUnits)
        findings.push(error('unit-install', file, `Line ${line}: [Install] ${key}=${value}: enabling ${name} would start it with the host (at boot, or with another unit), not when a client asks.`,
          "Drop the [Install] section and let D-Bus activation start the unit; or, if the admin wants it, grant 'install --allow boot-units'."))
    }
  }
  for (const key of [...ACTS_ON_OTHERS, ...PULLS_IN]) {
    for (const {value, line} of unitValues(unit, 'Unit', key)) {
      const others = value.split(/\s+/).filter((u) => u && !treeUnits.has(u) && !(PULLS_IN.includes(key) && PASSIVE_HOST_UNITS.has(u)))
      if (others.length > 0)
        findings.push(error('unit-affects-host', file, `Line ${line}: ${key}=${value}: ${name} would act on the host's ${others.join(', ')} (${key === 'Conflicts' ? 'stopping it' : 'starting, stopping or reloading it'} along with itself).`,
          `Drop ${key}=, or name only units the extension ships${PULLS_IN.includes(key) ? ` (or one of ${[...PASSIVE_HOST_UNITS].join(', ')})` : ''}.`))
    }
  }
  // A trigger starts its unit with no client asking: it must start one of the extension's own.
  const trigger = /^(.+)\.(socket|timer|path)$/.exec(name)
  if (trigger) {
    const section = trigger[2][0].toUpperCase() + trigger[2].slice(1)
    const started = unitValue(unit, section, 'Unit')?.value ?? `${trigger[1]}${trigger[2] === 'socket' && unitValue(unit, 'Socket', 'Accept')?.value === 'yes' ? '@' : ''}.service`
    if (!treeUnits.has(started))
      findings.push(error('unit-affects-host', file, `${name} starts ${started}, which the extension does not ship: the host's unit would start whenever the trigger fires.`,
        `Point Unit= at a unit of the extension, or remove ${name}.`))
  }
  if (name.endsWith('.service') && !name.endsWith('@.service') && !referenced.has(name) && !bootUnits)
    findings.push(error('unit-unreferenced', file, `Nothing in the extension starts ${name} on demand: no D-Bus service file names it in SystemdService= and none of its units refers to it.`,
      `Point a service file's SystemdService= at ${name} (and set BusName=), or remove the unit.`))
  return findings
}

/** Unit names the tree starts on demand: SystemdService= of its service files, and what its own units name. */
function referencedUnits(ctx: RuleContext, units: Array<{name: string; unit: UnitFile}>): Set<string> {
  const refs = new Set(serviceFiles(ctx.tree).map((s) => s.systemdService).filter((u): u is string => u !== undefined))
  for (const {name, unit} of units) {
    const trigger = /^(.+)\.(socket|timer|path)$/.exec(name)
    if (trigger) refs.add(unitValue(unit, trigger[2][0].toUpperCase() + trigger[2].slice(1), 'Unit')?.value ?? `${trigger[1]}.service`)
    for (const key of ['Wants', 'Requires', 'Requisite', 'BindsTo', 'OnFailure', 'OnSuccess', 'Upholds'])
      for (const {value} of unitValues(unit, 'Unit', key)) for (const u of value.split(/\s+/)) if (u) refs.add(u)
  }
  return refs
}

function check(ctx: RuleContext): Finding[] {
  const findings: Finding[] = []
  const parsed = childrenOf(ctx.tree, UNITS_DIR).filter((e) => UNIT_SUFFIX.test(e.path) && e.text !== undefined)
    .map((e) => ({name: e.path.slice(UNITS_DIR.length + 1), unit: parseUnitFile(e.text as string)}))
  const treeUnits = new Set(parsed.map((u) => u.name))
  const referenced = referencedUnits(ctx, parsed)
  for (const entry of childrenOf(ctx.tree, UNITS_DIR)) {
    if (!UNIT_SUFFIX.test(entry.path)) continue
    if (entry.readError !== undefined) {
      findings.push(error('unit-unreadable', entry.path, `Unit file ${entry.path} cannot be read (${entry.readError}); it was not checked.`,
        'Make it a readable regular file (mode 0644, owned by root).'))
      continue
    }
    if (entry.text === undefined) continue
    const unit = parseUnitFile(entry.text)
    const fatal = unit.problems.find((p) => p.fatal)
    if (fatal) {
      findings.push(error('unit-file-invalid', entry.path, `Line ${fatal.line}: ${fatal.message} systemd refuses to load the unit.`,
        'Fix the line: section headers are [Name] on a line of their own.'))
      continue
    }
    for (const problem of unit.problems)
      findings.push(warning('unit-line-ignored', entry.path, `Line ${problem.line}: ${problem.message}`,
        'Fix or remove the line; systemd drops it and the setting it meant to make.'))
    findings.push(...checkExec(ctx, entry.path, unit))
    findings.push(...checkConfined(ctx, entry.path, unit, treeUnits, referenced))
    if (entry.path.endsWith('.service')) findings.push(...checkService(ctx, entry.path, unit))
  }
  return findings
}

export const unitsRules: RuleSet = {
  rules: {
    'unit-unreadable': 'A unit file in usr/lib/systemd/system cannot be read.',
    'unit-file-invalid': 'A unit file has a syntax error that makes systemd refuse the whole unit.',
    'unit-line-ignored': 'A unit file line systemd ignores (missing \'=\', outside a section, invalid UTF-8) (warning).',
    'unit-exec-invalid': 'An Exec*= command line systemd rejects (relative path with \'/\', not normalized, directory, bad quoting).',
    'unit-exec-missing': 'An Exec*= binary is missing or not executable after the merge (warning with the \'-\' prefix).',
    'unit-service-exec-start': 'A service without ExecStart= or with several, which systemd only allows for Type=oneshot.',
    'unit-dbus-bus-name-missing': 'A Type=dbus service without BusName=.',
    'unit-bus-name-invalid': 'BusName= is not a valid well-known bus name.',
    'unit-name-host': 'A unit whose name the host already has.',
    'unit-host-reference': 'A unit the host already names to be started (a .wants/.requires link or a dependency of a host unit).',
    'unit-install': 'An [Install] section (WantedBy=, RequiredBy=, Alias=, ...) without the boot-units extra: the unit would start with the host once enabled.',
    'unit-alias-host': 'An Alias= naming a host unit, or an Also= naming a unit the extension does not ship.',
    'unit-affects-host': 'Conflicts=, OnFailure=, Wants=/Requires= (beyond passive targets and the bus) and similar settings, or a trigger\'s Unit=, naming units the extension does not ship.',
    'unit-unreferenced': 'A service unit nothing in the extension starts on demand (no SystemdService=, no unit of the tree names it) without the boot-units extra.',
    'unit-bus-name-not-activatable': 'A service with BusName= that no D-Bus service file in the tree activates through SystemdService= (warning).',
  },
  check,
}
