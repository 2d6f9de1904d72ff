import {type Finding, error} from '../findings.js'
import {parseRelease} from '../../formats/os-release.js'
import {RELEASE_DIR, RELEASE_PREFIX, judgeRelease, releasePath} from '../release.js'
import {childrenOf} from '../tree.js'
import type {RuleContext, RuleSet} from './context.js'

const GENERATE_HINT = "Run 'sysext-helper release PATH' in the app's build, or let 'sysext-helper install' generate one in a staged copy."

/** Release files in the tree, by extension name. */
export function releaseCandidates(ctx: Pick<RuleContext, 'tree'>): string[] {
  return childrenOf(ctx.tree, RELEASE_DIR)
    .filter((e) => e.path.slice(RELEASE_DIR.length + 1).startsWith(RELEASE_PREFIX))
    .map((e) => e.path.slice(RELEASE_DIR.length + 1 + RELEASE_PREFIX.length))
    .filter((name) => name !== '')
}

function check(ctx: RuleContext): Finding[] {
  const candidates = releaseCandidates(ctx)
  const name = ctx.name
  if (name === undefined) {
    if (candidates.length === 0)
      return [error('release-missing', RELEASE_DIR, `No extension-release file in ${RELEASE_DIR}/; systemd-sysext ignores a tree without one.`, GENERATE_HINT)]
    return [error('release-ambiguous', RELEASE_DIR,
      `Several extension-release files (${candidates.join(', ')}); the extension name is ambiguous.`,
      'Keep the one matching the image name, or pass --name.')]
  }
  const file = releasePath(name)
  const entry = ctx.tree.entries.get(file)
  if (entry === undefined) {
    const others = candidates.filter((c) => c !== name)
    if (others.length > 0)
      return [error('release-name-mismatch', `${RELEASE_DIR}/${RELEASE_PREFIX}${others[0]}`,
        `The release file is named for '${others[0]}', but the extension is installed as '${name}'; systemd-sysext looks only for ${RELEASE_PREFIX}${name}.`,
        `Rename it to ${file}, or install with --name ${others[0]}.`)]
    return [error('release-missing', file, `No ${file}; systemd-sysext ignores extension '${name}' without it.`, GENERATE_HINT)]
  }
  if (entry.type !== 'file')
    return [error('release-not-regular', file,
      `${file} is a ${entry.type === 'symlink' ? `symlink (to ${entry.linkTarget})` : entry.type === 'dir' ? 'directory' : 'special file'}; systemd-sysext requires a regular file.`,
      'Replace it with a regular file holding the release fields.')]
  if (entry.readError !== undefined || entry.text === undefined)
    return [error('release-unparsable', file, `${file} cannot be read (${entry.readError ?? 'unknown error'}).`, 'Make it readable by root (mode 0644).')]
  const parsed = parseRelease(entry.text)
  if (Object.keys(parsed.fields).length === 0 && parsed.badLines.length === 0)
    return [error('release-empty', file, `${file} is empty; systemd-sysext ignores extension '${name}'.`, 'Write at least ID=_any (or the host ID and VERSION_ID) into it.')]
  const findings: Finding[] = parsed.badLines.map((bad) =>
    error('release-unparsable', file, `Line ${bad.line} is not a KEY=VALUE assignment: '${bad.text.trim()}'.`, 'Use one KEY=VALUE per line; quote values containing spaces.'))
  const verdict = judgeRelease(name, parsed.fields, ctx.host)
  if (!verdict.accepted) findings.push(error(verdict.rule, file, verdict.message, verdict.hint))
  return findings
}

export const releaseRules: RuleSet = {
  rules: {
    'release-missing': 'The tree has no usr/lib/extension-release.d/extension-release.NAME (systemd-sysext ignores it).',
    'release-ambiguous': 'Several release files and no --name: the extension name cannot be decided.',
    'release-name-mismatch': 'The release file is named for another extension than the one being installed.',
    'release-not-regular': 'The release file is a symlink, directory or special file (systemd requires a regular file).',
    'release-empty': 'The release file is empty (systemd ignores the image).',
    'release-unparsable': 'The release file is unreadable or has lines that are not KEY=VALUE.',
    'release-scope': 'SYSEXT_SCOPE does not include "system".',
    'release-architecture': 'ARCHITECTURE is neither _any nor the host architecture in systemd\'s names.',
    'release-id-missing': 'ID is missing or empty.',
    'release-id-mismatch': 'ID is neither _any, the host ID nor (systemd >= 258) one of the host ID_LIKE.',
    'release-id-like': 'ID matches only the host ID_LIKE, but the host systemd is older than 258.',
    'release-sysext-level-mismatch': 'SYSEXT_LEVEL differs from the host SYSEXT_LEVEL.',
    'release-version-id-missing': 'The host has VERSION_ID (and no matching SYSEXT_LEVEL) but the release has no VERSION_ID.',
    'release-version-id-mismatch': 'VERSION_ID differs from the host VERSION_ID.',
  },
  check,
}
