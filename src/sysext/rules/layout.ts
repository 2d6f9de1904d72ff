import {type Finding, error, warning} from '../findings.js'
import {MERGED_DIRS, childrenOf, mergedEntries} from '../tree.js'
import type {RuleContext, RuleSet} from './context.js'


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
  }
  return findings
}

export const layoutRules: RuleSet = {
  rules: {
    'layout-ignored-top-level': 'A top-level entry other than the directories usr/ and opt/ (systemd-sysext drops it silently).',
    'layout-empty': 'Nothing under usr/ or opt/ to merge.',
    'layout-os-release': 'The tree carries an os-release file (systemd-sysext refuses the image).',
    'layout-shadows-host': 'A file that already exists on the host: the merge would replace the host\'s copy for everyone.',
    'layout-hardlink-outside': 'A non-root-owned file is hard-linked to paths outside the tree (its content can change later).',
  },
  check,
}
