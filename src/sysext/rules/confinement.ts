/**
 * Confinement: an app's extension may add its own on-demand service and nothing
 * else. This is an allow-list, not a list of known-bad paths: every entry of the
 * merged tree is classified into the role it plays for the extension's service
 * (its D-Bus service file, bus policy, polkit action, unit, the files those run,
 * the release file, documentation), or into an extra an admin must grant by name
 * for this extension, or it is refused. Whatever the host would run, load or
 * obey by itself from a path is never reached by the first two.
 *
 * Independent of the roles: no entry may replace or hide a host entry of another
 * type, and no symlink may lead out of the extension's own files.
 */
import {posix} from 'node:path'
import {type Finding, error} from '../findings.js'
import {resolveMerged} from '../host.js'
import {type Tree, type TreeEntry, MERGED_DIRS, mergedEntries} from '../tree.js'
import {type RuleContext, type RuleSet, onHost} from './context.js'
import {declaredBusNames} from './dbus.js'

/** What an admin can grant one extension beyond its own on-demand service. */
export const EXTRAS = {
  commands: 'new commands in usr/bin, usr/sbin, usr/local/bin and usr/local/sbin (on root\'s and sudo\'s PATH)',
  'boot-units': 'units that start without a client asking: .socket, .timer and .path units, [Install] sections, .wants/.requires links',
  'flatpak-triggers': 'usr/share/flatpak/triggers/*.trigger, which Flatpak runs as root after every install, update and uninstall',
} as const
export type Extra = keyof typeof EXTRAS

export function isExtra(value: string): value is Extra {
  return Object.hasOwn(EXTRAS, value)
}

/** The role an allowed entry plays, or the extra it needs. */
export type Classification =
  | {kind: 'role'; role: string}
  | {kind: 'extra'; extra: Extra; role: string}
  | {kind: 'refused'; why: string}

/** Absolute targets that exist only inside a Flatpak sandbox, never on the host. */
const SANDBOX_ONLY = ['/app', '/run/flatpak', '/run/host', '/.flatpak-info']

const UNITS = 'usr/lib/systemd/system'
/** Directories on root's and sudo's secure_path that only the host fills. */
const PATH_DIRS = ['usr/local/sbin', 'usr/local/bin', 'usr/sbin', 'usr/bin']
/** Data nothing on the host reads by itself: documentation, manuals, translations. */
const DOC_PREFIXES = ['usr/share/doc/', 'usr/share/man/', 'usr/share/licenses/', 'usr/share/info/']

/**
 * Why a location is refused, for the places attackers reach for first: what the
 * host does with a file there on its own. The first matching prefix wins.
 */
const HOST_READS: Array<[RegExp, string]> = [
  [/^usr\/(local\/)?lib\/systemd\/(system|user)-(environment-)?generators\//, 'systemd runs generators as root at every boot and daemon-reload'],
  [/^usr\/(local\/)?lib\/systemd\/(system|user)\/[^/]+\.d\//, 'a drop-in changes a unit of the host (or every unit of a type), not one of the extension\'s own'],
  [/^usr\/(local\/)?lib\/systemd\/user\//, 'user units run in every user\'s session manager'],
  [/^usr\/(local\/)?lib\/systemd\/(system-shutdown|system-sleep|system-preset|user-preset|network|resolved\.conf\.d|journald\.conf\.d|logind\.conf\.d|system\.conf\.d|user\.conf\.d|coredump\.conf\.d)\//, 'systemd reads it for the whole host'],
  [/^usr\/(local\/)?lib\/(udev|modprobe\.d|modules-load\.d|modules|sysctl\.d|binfmt\.d|tmpfiles\.d|sysusers\.d|environment\.d|kernel|firmware|dracut|initramfs-tools|pam\.d|security|NetworkManager|ssh|sudoers\.d|apt|dpkg|rpm|tuned|cron)(\/|$)/, 'the host loads or runs it by itself (at boot, for every device, login, package operation or process)'],
  [/^usr\/lib\/[^/]+-linux-gnu[^/]*\/(security|gconv|gio|gtk|qt|dri|gstreamer|ld|nss|pkcs11|sasl2|krb5|openssl|engines)/, 'libraries there are loaded into host processes by name or by directory'],
  [/^usr\/(lib|lib64|lib\/[^/]+-linux-gnu[^/]*)\/libnss_/, 'NSS modules are loaded into every process that looks up a user or host, root\'s included'],
  [/^usr\/(local\/)?(lib|lib64|share)\/(python|perl|ruby|node|lua|tcl|php|guile|gems)[^/]*\//, 'interpreters import modules (and run .pth files) from here in every program, root\'s included'],
  [/^usr\/share\/perl5?\//, 'Perl loads modules from here in every program, root\'s included'],
  [/^usr\/(local\/)?share\/dbus-1\/(services|session\.d|interfaces\/.+\/)/, 'the session bus of every user reads it'],
  [/^usr\/(local\/)?share\/polkit-1\/rules\.d\//, 'polkit runs JavaScript rules for every authorization check on the host and they can grant any action to anyone'],
  [/^usr\/(local\/)?share\/(applications|autostart|xsessions|wayland-sessions|gnome-shell|glib-2\.0\/schemas|mime|icons|fonts|thumbnailers|X11|xdg-desktop-portal|flatpak)\//, 'desktop sessions and their tools load it for every user'],
  [/^usr\/(local\/)?share\/(bash-completion|zsh|fish|X11|xsessions)\//, 'every user\'s shell or session loads it'],
  [/^usr\/local\//, 'usr/local belongs to the host\'s administrator, and several of its directories are searched before /usr'],
  [/^usr\/etc\//, 'it is read as the host\'s default configuration'],
  [/^usr\/share\/factory\//, 'systemd-tmpfiles copies it into /etc and /var'],
]

export interface Own {
  /** Bus names the tree declares (service files' Name=, units' BusName=). */
  busNames: Set<string>
  /** Names of the extension's own directories: the extension name, its bus names and unit names. */
  dirNames: Set<string>
}

export function ownNames(tree: Tree, name: string | undefined): Own {
  const busNames = declaredBusNames(tree)
  // Not unit names: the tree picks those freely (a unit named vim.service must not make usr/share/vim its own).
  const dirNames = new Set<string>([...busNames])
  if (name) dirNames.add(name)
  return {busNames, dirNames}
}

const childOf = (path: string, dir: string): boolean => path.startsWith(`${dir}/`) && !path.slice(dir.length + 1).includes('/')

const textDomains = new WeakMap<RuleContext['host'], Map<string, string | undefined>>()
/** A language in which the host has the text domain `file` (e.g. sudo.mo), if any; once per domain. */
function hostTextDomain(ctx: RuleContext, file: string): string | undefined {
  let known = textDomains.get(ctx.host)
  if (!known) textDomains.set(ctx.host, (known = new Map()))
  if (!known.has(file)) known.set(file, (ctx.host.readdir('/usr/share/locale') ?? []).find((lang) => onHost(ctx, `/usr/share/locale/${lang}/LC_MESSAGES/${file}`)))
  return known.get(file)
}

/** Pure: the role of one non-directory entry of the merged tree. */
export function classify(entry: TreeEntry, ctx: RuleContext, own: Own): Classification {
  const p = entry.path
  const base = posix.basename(p)
  const regular = entry.type === 'file'
  if (childOf(p, 'usr/lib/extension-release.d') && base.startsWith('extension-release.')) return {kind: 'role', role: 'release file'}
  if (childOf(p, 'usr/share/dbus-1/system-services') && regular && base.endsWith('.service')) return {kind: 'role', role: 'D-Bus system service file'}
  if (childOf(p, 'usr/share/dbus-1/system.d') && regular && base.endsWith('.conf')) return {kind: 'role', role: 'bus policy'}
  if (childOf(p, 'usr/share/dbus-1/interfaces') && regular && base.endsWith('.xml')) return {kind: 'role', role: 'D-Bus interface description'}
  if (childOf(p, 'usr/share/polkit-1/actions') && regular && base.endsWith('.policy')) return {kind: 'role', role: 'polkit action'}
  // Held to new system accounts of the extension's own by the sysusers-* rules; install runs systemd-sysusers on it.
  if (childOf(p, 'usr/lib/sysusers.d') && regular && base.endsWith('.conf')) return {kind: 'role', role: 'sysusers.d file (the system users and groups of its service)'}
  if (childOf(p, UNITS)) {
    if (!regular) return {kind: 'refused', why: 'a symlink among the units is an alias or a mask, which redirects a unit name the host may use'}
    if (base.endsWith('.service')) return {kind: 'role', role: 'systemd service unit'}
    if (/\.(socket|timer|path)$/.test(base)) return {kind: 'extra', extra: 'boot-units', role: 'unit that starts its service without a client asking'}
    return {kind: 'refused', why: 'targets, mounts, slices and other unit types act on the host as a whole; only .service units (and granted triggers) are allowed'}
  }
  const wants = new RegExp(`^${UNITS}/[^/]+\\.(wants|requires|upholds)/[^/]+$`).exec(p)
  if (wants) {
    // systemd reads only the entry's name: it must name a unit the extension ships, or it starts the host's.
    if (!ctx.tree.entries.has(`${UNITS}/${base}`)) return {kind: 'refused', why: `it names ${base}, which the extension does not ship, so the host's unit of that name would start with the host's ${posix.basename(posix.dirname(p))}`}
    return {kind: 'extra', extra: 'boot-units', role: `.${wants[1]} link that starts a unit with the host's`}
  }

  const pathDir = PATH_DIRS.find((d) => childOf(p, d))
  if (pathDir) return {kind: 'extra', extra: 'commands', role: `command on the host's PATH (${pathDir})`}
  if (childOf(p, 'usr/share/flatpak/triggers') && base.endsWith('.trigger')) return {kind: 'extra', extra: 'flatpak-triggers', role: 'Flatpak trigger'}

  // Wherever the host (or a program it may install later) reads by itself, no own name makes a path the extension's.
  const hostReads = HOST_READS.find(([re]) => re.test(p))
  if (hostReads) return {kind: 'refused', why: hostReads[1]}

  const parts = p.split('/')
  // Directories of the extension's own: new names, so nothing of the host's is inside.
  if (parts[0] === 'usr' && parts[1] === 'libexec' && parts.length >= 3 && !onHost(ctx, `/usr/libexec/${parts[2]}`))
    return {kind: 'role', role: 'program of the extension (usr/libexec)'}
  for (const [dir, depth] of [['usr/lib', 3], ['usr/share', 3], ['opt', 2]] as const) {
    if (p.startsWith(`${dir}/`) && parts.length > depth && own.dirNames.has(parts[depth - 1]) && !onHost(ctx, `/${parts.slice(0, depth).join('/')}`))
      return {kind: 'role', role: `file in the extension's own directory ${parts.slice(0, depth).join('/')}/`}
  }
  if (DOC_PREFIXES.some((d) => p.startsWith(d))) return {kind: 'role', role: 'documentation'}
  const translation = /^usr\/share\/locale\/[^/]+\/LC_MESSAGES\/([^/]+\.mo)$/.exec(p)
  if (translation) {
    const hostLanguage = hostTextDomain(ctx, translation[1])
    return hostLanguage
      ? {kind: 'refused', why: `${translation[1]} is a text domain of the host's (/usr/share/locale/${hostLanguage}/LC_MESSAGES/${translation[1]}): a translation of its messages, format strings included, would be loaded by the host's program, setuid ones too`}
      : {kind: 'role', role: 'translation'}
  }


  return {kind: 'refused', why: 'it is none of the files an extension\'s on-demand service needs'}
}

const ALLOWED_LIST = 'its D-Bus service files, bus policies and polkit actions, .service units, sysusers.d files creating its own system accounts, programs under usr/libexec/NEW-NAME/, files under usr/lib/NAME/, usr/share/NAME/ or opt/NAME/ (NAME: the extension\'s name or one of its bus names), documentation, and the release file'

function check(ctx: RuleContext): Finding[] {
  const findings: Finding[] = []
  const own = ownNames(ctx.tree, ctx.name)
  const granted = new Set(ctx.allow ?? [])
  const allowed = new Set<string>()
  /** Allowed, or refused only for an extra not granted (reported once, on the entry itself). */
  const ownFiles = new Set<string>()
  const merged = mergedEntries(ctx.tree)

  for (const entry of merged) {
    if (entry.type === 'dir') continue
    const c = classify(entry, ctx, own)
    if (c.kind !== 'refused') ownFiles.add(entry.path)
    if (c.kind === 'role' || (c.kind === 'extra' && granted.has(c.extra))) {
      allowed.add(entry.path)
      continue
    }
    if (c.kind === 'extra') {
      findings.push(error('confine-extra', entry.path,
        `${entry.path} is a ${c.role}: ${EXTRAS[c.extra]} reach beyond the extension's own service, so they need the admin's explicit grant.`,
        `If this extension should have it, grant it for this extension only: 'sysext-helper install … --allow ${c.extra}' (or approve --allow ${c.extra}); otherwise remove it.`))
      continue
    }
    findings.push(error('confine-path', entry.path,
      `${entry.path} is outside what an app's extension may contain: ${c.why}.`,
      `An extension may ship only ${ALLOWED_LIST}; move the file there or remove it.`))
  }

  // Directories exist only to hold allowed entries; one that holds none merges for nothing.
  const holding = new Set<string>() // directories with a file somewhere below (refused files are reported themselves)
  for (const entry of merged) {
    if (entry.type === 'dir') continue
    for (let dir = posix.dirname(entry.path); dir !== '.' && !holding.has(dir); dir = posix.dirname(dir)) holding.add(dir)
  }
  for (const entry of merged) {
    if (entry.type !== 'dir' || MERGED_DIRS.includes(entry.path) || holding.has(entry.path)) continue
    findings.push(error('confine-path', entry.path,
      `${entry.path}/ holds nothing an extension may ship; merged, it only adds a directory to the host's /${entry.path}.`,
      'Remove the empty directory.'))
  }

  for (const entry of merged) {
    const host = ctx.host.lstat(`/${entry.path}`)
    if (!host || ctx.host.extensionProviding(`/${entry.path}`) === ctx.name) continue
    const treeDir = entry.type === 'dir'
    const hostDir = host.type === 'dir'
    if (treeDir !== hostDir)
      findings.push(error('confine-host-type', entry.path,
        treeDir
          ? `${entry.path} is a directory where the host has a ${host.type}: merged, it hides /${entry.path} from every program.`
          : `${entry.path} is a ${entry.type} where the host has a directory: merged, it hides everything the host keeps in /${entry.path}/.`,
        'An extension adds entries under new names; it never replaces a host entry, least of all a directory.'))
  }

  for (const entry of merged) {
    if (entry.type !== 'symlink' || entry.linkTarget === undefined) continue
    const absolute = entry.linkTarget.startsWith('/') ? entry.linkTarget : posix.join('/', posix.dirname(entry.path), entry.linkTarget)
    const resolved = resolveMerged(ctx.tree, ctx.host, absolute)
    const ownTarget = resolved !== undefined && resolved.source === 'tree' && ownFiles.has(resolved.path.slice(1)) && resolved.type === 'file'
    if (!ownTarget)
      findings.push(error('confine-symlink', entry.path,
        SANDBOX_ONLY.some((s) => entry.linkTarget === s || entry.linkTarget?.startsWith(`${s}/`))
          ? `${entry.path} points to ${entry.linkTarget}, which exists only inside the Flatpak sandbox; on the host the link is broken (or leads wherever the host's path of that name leads).`
          : resolved === undefined
          ? `${entry.path} -> ${entry.linkTarget} leads nowhere once merged; a dangling link can be filled in later by whoever controls its target.`
          : `${entry.path} -> ${entry.linkTarget} leads to ${resolved.path}, ${resolved.source === 'host' ? `the host's ${resolved.type}` : 'a tree entry that is not one of the extension\'s own files'}; the extension would expose or redirect a path it does not own.`,
        'Point symlinks only at regular files the extension ships itself, with a relative target, or copy the file.'))
  }
  return findings
}

export const confinementRules: RuleSet = {
  rules: {
    'confine-path': 'An entry outside the allow-list of what an app\'s extension may contain (its own service\'s files).',
    'confine-extra': 'An entry allowed only with an extra the admin has not granted for this extension (install --allow EXTRA).',
    'confine-host-type': 'An entry that replaces or hides a host entry of another type (a symlink or file over a host directory, a directory over a file).',
    'confine-symlink': 'A symlink that leads anywhere but a regular file the extension itself ships.',
  },
  check,
}

