/**
 * System users and groups: every account a unit (User=, Group=,
 * SupplementaryGroups=), a D-Bus service file (User=) or a bus policy
 * (<policy user=… group=…>) names must exist on the host or be created by the
 * tree's own usr/lib/sysusers.d/*.conf. Debian's maintainer scripts create them
 * for packages; an extension has no scripts, so a missing account fails only at
 * activation ("Failed to find user 'rtkit'").
 *
 * sysusers.d files are held to creating new system accounts of the extension's
 * own: `u`/`g` lines with names the host does not have and no explicit id that is
 * 0, outside the system range or already in use; `m` lines only between the
 * tree's own new accounts; no `r` ranges. Install runs systemd-sysusers on them.
 */
import {posix} from 'node:path'
import {parseUnitFile, unitValues} from '../../formats/unit-file.js'
import {parseSysusers} from '../../formats/sysusers.js'
import {parseXml, descendants} from '../../formats/xml.js'
import {type Finding, error} from '../findings.js'
import {childrenOf} from '../tree.js'
import type {RuleContext, RuleSet} from './context.js'
import {UNITS_DIR, serviceFiles} from './dbus.js'

export const SYSUSERS_DIR = 'usr/lib/sysusers.d'
/** systemd's default SYS_UID_MAX / SYS_GID_MAX (login.defs on Debian). */
const SYSTEM_ID_MAX = 999

const RULES = {
  'user-missing': 'A user named by a unit (User=), a D-Bus service file (User=) or a bus policy (<policy user=>) exists on the host or is created by the tree\'s sysusers.d.',
  'group-missing': 'A group named by a unit (Group=, SupplementaryGroups=) or a bus policy (<policy group=>) exists on the host or is created by the tree\'s sysusers.d.',
  'sysusers-syntax': 'sysusers.d lines parse (type, name, id, …).',
  'sysusers-line-refused': 'sysusers.d may only create accounts (u, g) and add the tree\'s own users to its own groups (m); no r ranges or other types.',
  'sysusers-id': 'Explicit uids/gids in sysusers.d are free system ids (1-999), not 0, not in use on the host, not taken from a file.',
  'sysusers-host-name': 'sysusers.d creates only names the host does not already have.',
}

interface Created {
  users: Set<string>
  groups: Set<string>
}

/** Names that are ids or specifiers are not looked up: systemd accepts numeric ids without an entry. */
function lookedUp(name: string): boolean {
  return name !== '' && !/^\d+$/.test(name) && !name.includes('%')
}

function checkSysusers(ctx: RuleContext, created: Created): Finding[] {
  const findings: Finding[] = []
  const {users, groups} = ctx.host.accounts()
  const usedUids = new Set(users.values())
  const usedGids = new Set(groups.values())
  const files = childrenOf(ctx.tree, SYSUSERS_DIR).filter((e) => e.type === 'file' && e.path.endsWith('.conf') && e.text !== undefined)
  // Accounts from this extension's own file, merged now (an update): the host has them because of it.
  const ours = (file: string): boolean => ctx.name !== undefined && ctx.host.extensionProviding(`/${file}`) === ctx.name
  const parsed = files.map((e) => ({file: e.path, parsed: parseSysusers(e.text as string)}))
  for (const {parsed: p} of parsed)
    for (const l of p.lines) {
      if (l.type === 'u' || l.type === 'u!') {
        created.users.add(l.name)
        const gid = l.id.includes(':') ? l.id.split(':')[1] : undefined
        if (gid === undefined || /^\d+$/.test(gid)) created.groups.add(l.name)
      } else if (l.type === 'g') created.groups.add(l.name)
    }
  for (const {file, parsed: p} of parsed) {
    const own = ours(file)
    for (const problem of p.problems)
      findings.push(error('sysusers-syntax', file, `Line ${problem.line}: ${problem.message}; systemd-sysusers skips the line.`, 'Write TYPE NAME ID GECOS HOME SHELL, fields separated by spaces.'))
    for (const l of p.lines) {
      const at = `Line ${l.line}: ${l.type} ${l.name}`
      if (l.type === 'm') {
        if (!(created.users.has(l.name) && created.groups.has(l.id)))
          findings.push(error('sysusers-line-refused', file,
            `${at} ${l.id} adds ${created.users.has(l.name) ? 'the user' : `the existing user '${l.name}'`} to ${created.groups.has(l.id) ? 'a group' : `the existing group '${l.id}'`} the extension does not create; membership of a host group grants what that group may do on the host.`,
            'Only add the extension\'s own users to its own groups; an admin adds host accounts to groups by hand.'))
        continue
      }
      if (l.type === 'r') {
        findings.push(error('sysusers-line-refused', file, `${at}: an r line changes the range of ids the host allocates from for every later account.`, 'Remove the r line.'))
        continue
      }
      if (l.type !== 'u' && l.type !== 'u!' && l.type !== 'g') {
        findings.push(error('sysusers-line-refused', file, `${at}: line type '${l.type}' is not one an extension may use (only u and g create its accounts, m joins them).`, 'Use u and g lines only.'))
        continue
      }
      const kind = l.type === 'g' ? 'group' : 'user'
      const hostHas = l.type === 'g' ? groups.has(l.name) : users.has(l.name) || (groups.has(l.name) && !l.id.includes(':'))
      if (hostHas && !own)
        findings.push(error('sysusers-host-name', file,
          `${at}: the host already has ${l.type !== 'g' && !users.has(l.name) ? `a group '${l.name}' (the user's primary group would be it)` : `a ${kind} '${l.name}'`}; systemd-sysusers leaves it as it is, so the extension's service would run as, or with the rights of, a host account.`,
          `Name the ${kind} after the extension (e.g. '${(ctx.name ?? 'app').split('.').pop()?.toLowerCase()}'), so it is new on every host.`))
      if (l.id === '-' || l.id === '') continue
      const [uidPart, gidPart] = l.id.split(':')
      const ids = l.type === 'g' ? [['gid', uidPart]] : [['uid', uidPart], ...(gidPart !== undefined ? [['gid', gidPart]] : [])]
      for (const [what, value] of ids) {
        if (value.startsWith('/')) {
          findings.push(error('sysusers-id', file, `${at}: the ${what} is taken from the owner of ${value}, which can be any account of the host.`, 'Use - (let systemd-sysusers pick a free system id).'))
          continue
        }
        if (!/^\d+$/.test(value)) {
          if (what === 'gid' && !created.groups.has(value))
            findings.push(error('sysusers-id', file, `${at}: the primary group '${value}' is not one the extension creates; the user would join a host group.`, 'Use a group the extension creates (a g line), or -.'))
          continue
        }
        const id = Number(value)
        const inUse = what === 'uid' ? usedUids.has(id) : usedGids.has(id)
        if (id === 0 || id > SYSTEM_ID_MAX || (inUse && !own))
          findings.push(error('sysusers-id', file,
            `${at}: ${what} ${id} ${id === 0 ? 'is root\'s' : id > SYSTEM_ID_MAX ? `is not a system id (1-${SYSTEM_ID_MAX})` : 'is already in use on the host'}; an extension may only create new system accounts.`,
            'Use - and let systemd-sysusers pick a free system id.'))
      }
    }
  }
  return findings
}

function check(ctx: RuleContext): Finding[] {
  const created: Created = {users: new Set(), groups: new Set()}
  const findings = checkSysusers(ctx, created)
  const {users, groups} = ctx.host.accounts()
  const hint = (kind: string, name: string): string =>
    `Ship ${SYSUSERS_DIR}/${(ctx.name ?? name)}.conf with '${kind === 'user' ? 'u' : 'g'} ${name} - "…"' (systemd-sysusers creates it at install), or use an account the host has${kind === 'user' ? ', or DynamicUser=yes in the unit' : ''}.`
  const need = (kind: 'user' | 'group', name: string, file: string, where: string, consequence = 'the unit fails with "Failed to determine user credentials" (status 217/USER)'): void => {
    if (!lookedUp(name) || name === 'root') return
    // A --host-root without the file cannot be judged (every real host has both).
    if ((kind === 'user' ? users : groups).size === 0) return
    const known = kind === 'user' ? users.has(name) || created.users.has(name) : groups.has(name) || created.groups.has(name)
    if (known) return
    findings.push(error(`${kind}-missing`, file,
      `${where} names the ${kind} '${name}', which the host (${ctx.host.root === '/' ? '' : ctx.host.root}/etc/${kind === 'user' ? 'passwd' : 'group'}) does not have and the extension's ${SYSUSERS_DIR} does not create; ${consequence}.`,
      hint(kind, name)))
  }
  for (const entry of childrenOf(ctx.tree, UNITS_DIR)) {
    if (entry.text === undefined || entry.type !== 'file') continue
    const unit = parseUnitFile(entry.text)
    const section = entry.path.endsWith('.socket') ? 'Socket' : 'Service'
    const dynamic = unitValues(unit, 'Service', 'DynamicUser').some((v) => /^(1|yes|y|true|t|on)$/i.test(v.value))
    if (!dynamic) {
      for (const v of unitValues(unit, 'Service', 'User')) need('user', v.value, entry.path, `Line ${v.line}: User=`)
      for (const v of unitValues(unit, 'Service', 'Group')) need('group', v.value, entry.path, `Line ${v.line}: Group=`)
    }
    for (const v of unitValues(unit, 'Service', 'SupplementaryGroups'))
      for (const g of v.value.split(/\s+/).filter(Boolean)) need('group', g, entry.path, `Line ${v.line}: SupplementaryGroups=`)
    if (section === 'Socket') {
      for (const v of unitValues(unit, 'Socket', 'SocketUser')) need('user', v.value, entry.path, `Line ${v.line}: SocketUser=`)
      for (const v of unitValues(unit, 'Socket', 'SocketGroup')) need('group', v.value, entry.path, `Line ${v.line}: SocketGroup=`)
    }
  }
  for (const service of serviceFiles(ctx.tree))
    if (service.user !== undefined) need('user', service.user, service.file, `${posix.basename(service.file)}: User=`, 'the bus cannot start the service as that user ("Failed to find user")')
  for (const entry of childrenOf(ctx.tree, 'usr/share/dbus-1/system.d')) {
    if (entry.text === undefined || !entry.path.endsWith('.conf')) continue
    const doc = parseXml(entry.text)
    if (!('root' in doc)) continue
    for (const el of descendants(doc.root)) {
      if (el.name !== 'policy') continue
      if (el.attrs.user !== undefined && el.attrs.user !== '*') need('user', el.attrs.user, entry.path, `Line ${el.line}: <policy user="${el.attrs.user}">`, 'dbus drops the policy ("Unknown username"), so its rules (own=, send_destination=) do not apply')
      if (el.attrs.group !== undefined && el.attrs.group !== '*') need('group', el.attrs.group, entry.path, `Line ${el.line}: <policy group="${el.attrs.group}">`, 'dbus drops the policy ("Unknown group"), so its rules do not apply')
    }
  }
  return findings
}

export const usersRules: RuleSet = {rules: RULES, check}
