import {posix} from 'node:path'
import {type Finding, error, warning} from '../findings.js'
import {MERGED_DIRS, childrenOf, mergedEntries} from '../tree.js'
import type {RuleContext, RuleSet} from './context.js'


/**
 * Directories whose files the host runs or loads on its own — at boot, for every
 * device, login or process — not only when the extension's service is activated.
 * An app has no business there, and it is the obvious route for a malicious one.
 */
const SENSITIVE_DIRS = [
  'usr/lib/systemd/system-generators', 'usr/lib/systemd/system-environment-generators', 'usr/lib/systemd/user-generators',
  'usr/lib/systemd/user-environment-generators', 'usr/lib/systemd/system-shutdown', 'usr/lib/systemd/system-sleep',
  'usr/lib/udev/rules.d', 'usr/lib/modules-load.d', 'usr/lib/modprobe.d', 'usr/lib/sysctl.d', 'usr/lib/binfmt.d',
  'usr/lib/tmpfiles.d', 'usr/lib/sysusers.d', 'usr/lib/environment.d', 'usr/lib/pam.d', 'usr/lib/security',
  'usr/lib/x86_64-linux-gnu/security', 'usr/lib/aarch64-linux-gnu/security', 'usr/lib64/security', 'usr/lib/kernel',
  'usr/lib/modules', 'usr/share/polkit-1/rules.d', 'usr/etc',
]

/** Absolute targets that exist only inside a Flatpak sandbox, never on the host. */
const SANDBOX_ONLY = ['/app', '/run/flatpak', '/run/host', '/.flatpak-info']

function check(ctx: RuleContext): Finding[] {
  const findings: Finding[] = []
  const top = childrenOf(ctx.tree, '')
  for (const entry of top) {
    if (MERGED_DIRS.includes(entry.path) && entry.type === 'dir') continue
    findings.push(error('layout-ignored-top-level', entry.path,
      MERGED_DIRS.includes(entry.path)
        ? `'${entry.path}' is a ${entry.type}, not a directory; systemd-sysext merges only the directories usr/ and opt/.`
        : `'${entry.path}' is outside usr/ and opt/; systemd-sysext silently drops it, so nothing in it reaches the host.`,
      'Move it under usr/ (e.g. usr/lib/, usr/share/); configuration for /etc cannot be shipped in a system extension.'))
  }
  const merged = mergedEntries(ctx.tree)
  if (!merged.some((e) => e.type !== 'dir'))
    findings.push(error('layout-empty', '', 'The tree has no files under usr/ or opt/; there is nothing to merge.',
      'Point at the directory that holds usr/ (for a Flatpak app: files/lib/extensions).'))

  for (const osRelease of ['usr/lib/os-release', 'etc/os-release']) {
    if (ctx.tree.entries.has(osRelease))
      findings.push(error('layout-os-release', osRelease,
        `The tree ships ${osRelease}; systemd-sysext refuses images that carry an os-release (it would replace the host's identity).`,
        'Remove it; the extension identifies itself with usr/lib/extension-release.d/extension-release.NAME.'))
  }

  for (const entry of merged) {
    if (entry.type === 'dir') continue
    const sensitive = SENSITIVE_DIRS.find((d) => entry.path.startsWith(`${d}/`))
    if (sensitive && sensitive !== 'usr/share/polkit-1/rules.d')
      findings.push(error('layout-sensitive-path', entry.path,
        `${entry.path} is in ${sensitive}/, which the host runs or loads by itself (at boot, for every device, login or process), not just when the app's service is activated.`,
        "Ship only what the service needs: its binary, D-Bus service file and policy, polkit action and unit."))
    if (/^usr\/lib\/systemd\/system\/[^/]+\.(wants|requires|upholds)\//.test(entry.path))
      findings.push(warning('layout-enables-unit', entry.path,
        `${entry.path} enables a unit without the admin doing so: it starts whenever its target starts (e.g. at every boot).`,
        'Prefer D-Bus activation (SystemdService=) so the unit runs only when a client calls it.'))
    // The merged /usr shows the extension's file instead of the host's: every program on the host would get it.
    const onHost = ctx.host.lstat(`/${entry.path}`)
    const provider = onHost && onHost.type !== 'dir' ? ctx.host.extensionProviding(`/${entry.path}`) : undefined
    if (onHost && onHost.type !== 'dir' && provider !== ctx.name)
      findings.push(error('layout-shadows-host', entry.path,
        provider
          ? `/${entry.path} is already shipped by the merged extension '${provider}'; which copy wins depends on merge order.`
          : `/${entry.path} exists on the host; once merged, the extension's copy replaces the host's for every program and user.`,
        'Install under a path of the app\'s own (usr/libexec/APP/, usr/lib/APP/); an extension must add files, never replace them.'))
  }

  const inTree = new Map<number, number>()
  for (const entry of ctx.tree.entries.values()) if (entry.type === 'file') inTree.set(entry.ino, (inTree.get(entry.ino) ?? 0) + 1)

  for (const entry of merged) {
    if (entry.type === 'file' && entry.uid !== 0 && entry.nlink > (inTree.get(entry.ino) ?? 1))
      findings.push(warning('layout-hardlink-outside', entry.path,
        `${entry.path} has ${entry.nlink} hard links, some outside the tree, and is owned by uid ${entry.uid}: its content can change after validation through another path.`,
        'Install from a root-owned copy; sysext-helper install copies such files instead of linking them.'))
    if (entry.type !== 'symlink' || entry.linkTarget === undefined) continue
    const target = entry.linkTarget
    if (target.startsWith('/')) {
      const sandbox = SANDBOX_ONLY.find((p) => target === p || target.startsWith(`${p}/`))
      if (sandbox)
        findings.push(error('layout-symlink-escape', entry.path,
          `${entry.path} points to ${target}, which exists only inside the Flatpak sandbox; on the host the link is broken.`,
          'Point it at the path it will have on the host after the merge (under /usr), or use a relative link within the tree.'))
      continue
    }
    // Relative links are resolved on the host after the merge: climbing above /
    // stops at /, but climbing out of usr/ reaches host paths the tree does not control.
    const resolved = posix.normalize(posix.join(posix.dirname(`/${entry.path}`), target))
    const climbsOut = posix.join(posix.dirname(entry.path), target).startsWith('..')
    if (climbsOut || !MERGED_DIRS.some((t) => resolved === `/${t}` || resolved.startsWith(`/${t}/`)))
      findings.push(error('layout-symlink-escape', entry.path,
        `${entry.path} -> ${target} leaves the extension (resolves to ${resolved} on the host).`,
        'Keep relative links inside usr/ or opt/; link to host paths with an absolute target if that is really intended.'))
  }
  return findings
}

export const layoutRules: RuleSet = {
  rules: {
    'layout-ignored-top-level': 'A top-level entry other than the directories usr/ and opt/ (systemd-sysext drops it silently).',
    'layout-empty': 'Nothing under usr/ or opt/ to merge.',
    'layout-os-release': 'The tree carries an os-release file (systemd-sysext refuses the image).',
    'layout-symlink-escape': 'A symlink points into the Flatpak sandbox (/app, ...) or climbs out of usr/ and opt/.',
    'layout-sensitive-path': 'A file in a directory the host runs or loads by itself (generators, udev rules, PAM, sysctl, modules, tmpfiles, ...).',
    'layout-enables-unit': 'A unit enabled through a .wants/.requires link: it starts without any client asking (warning).',
    'layout-shadows-host': 'A file that already exists on the host: the merge would replace the host\'s copy for everyone.',
    'layout-hardlink-outside': 'A non-root-owned file is hard-linked to paths outside the tree (its content can change later).',
  },
  check,
}
