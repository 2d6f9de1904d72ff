import {type Finding, error} from '../findings.js'
import {parseRelease} from '../../formats/os-release.js'
import {ID_LIKE_SINCE, RELEASE_DIR, RELEASE_PREFIX, judgeRelease, releasePath} from '../release.js'
import {type TreeEntry, childrenOf} from '../tree.js'
import {STRICT_XATTR, parseBoolean} from '../xattr.js'
import type {RuleContext, RuleSet} from './context.js'

const GENERATE_HINT = "Run 'sysext-helper release PATH' in the app's build, or let 'sysext-helper install' generate one in a staged copy."

/** Release files in the tree, by extension name. */
export function releaseCandidates(ctx: Pick<RuleContext, 'tree'>): string[] {
  return childrenOf(ctx.tree, RELEASE_DIR)
    .filter((e) => e.path.slice(RELEASE_DIR.length + 1).startsWith(RELEASE_PREFIX))
    .map((e) => e.path.slice(RELEASE_DIR.length + 1 + RELEASE_PREFIX.length))
    .filter((name) => name !== '')
}

/** systemd's image_name_is_valid(), as far as release-file names go. */
function validImageName(name: string): boolean {
  return name !== '' && name.length <= 255 && !name.startsWith('.') && !name.includes('/') && /^[\x20-\x7e]+$/.test(name)
}

/** The file systemd-sysext reads for extension `name`, or why there is none (os-util.c open_extension_release). */
type Source =
  | {kind: 'file'; file: string; raw: Buffer | undefined; via: string}
  | {kind: 'finding'; finding: Finding}

function findSource(ctx: RuleContext, name: string, candidates: string[]): Source {
  const file = releasePath(name)
  const entry = ctx.tree.entries.get(file)
  let dangling: string | undefined
  if (entry?.type === 'file') return {kind: 'file', file, raw: entry.raw ?? (entry.text === undefined ? undefined : Buffer.from(entry.text)), via: ''}
  if (entry?.type === 'symlink') {
    const chased = entry.chased
    if (chased?.type === 'file') return {kind: 'file', file, raw: chased.raw, via: ` (through the symlink to ${chased.path})`}
    if (chased && chased.type !== 'missing')
      return {kind: 'finding', finding: error('release-not-regular', file,
        `${file} is a symlink to ${chased.path}, a ${chased.type === 'dir' ? 'directory' : 'special file'}; systemd-sysext cannot read it and the merge fails.`,
        'Point it at a regular file inside the image, or replace it with the file itself.')}
    dangling = `${file} -> ${entry.linkTarget} leads nowhere inside the image (systemd resolves it within the image, so it cannot reach the host's files)`
  } else if (entry !== undefined) {
    return {kind: 'finding', finding: error('release-not-regular', file,
      `${file} is a ${entry.type === 'dir' ? 'directory' : 'special file'}; systemd-sysext cannot read it and the merge fails.`,
      'Replace it with a regular file holding the release fields.')}
  }

  // Fallback: exactly one other regular release file that carries user.extension-release.strict=0.
  const others = childrenOf(ctx.tree, RELEASE_DIR).filter((e) => e.path !== file && e.type === 'file'
    && e.path.slice(RELEASE_DIR.length + 1).startsWith(RELEASE_PREFIX) && validImageName(e.path.slice(RELEASE_DIR.length + 1 + RELEASE_PREFIX.length)))
  const relaxed = others.filter((e) => e.strictXattr !== undefined && e.strictXattr !== null && parseBoolean(e.strictXattr) === false)
  const unknown = others.filter((e) => e.strictXattr === undefined)
  if (relaxed.length > 1)
    return {kind: 'finding', finding: error('release-ambiguous', RELEASE_DIR,
      `No ${file}${dangling ? ` (${dangling})` : ''}, and ${relaxed.length} release files carry ${STRICT_XATTR}=0 (${relaxed.map((e) => e.path.slice(RELEASE_DIR.length + 1)).join(', ')}); systemd-sysext finds the fallback "not unique" and the merge fails.`,
      `Keep one release file, or name it ${file}.`)}
  if (relaxed.length === 1) {
    const e = relaxed[0] as TreeEntry
    return {kind: 'file', file: e.path, raw: e.raw, via: ` (used for '${name}' because it carries ${STRICT_XATTR}=${e.strictXattr})`}
  }
  const noXattr = unknown.length > 0 ? ` (its ${STRICT_XATTR} could not be read: neither getfattr nor python3 is installed)` : ` and has no ${STRICT_XATTR}=0 xattr`
  const named = candidates.filter((c) => c !== name)
  if (dangling)
    return {kind: 'finding', finding: error('release-not-regular', file, `${dangling}; systemd-sysext finds no release file for '${name}'.`,
      'Point the symlink at a regular file inside the image (a relative target), or replace it with the file.')}
  if (named.length > 0)
    return {kind: 'finding', finding: error('release-name-mismatch', `${RELEASE_DIR}/${RELEASE_PREFIX}${named[0]}`,
      `The release file is named for '${named[0]}', but the extension is installed as '${name}'; systemd-sysext looks only for ${RELEASE_PREFIX}${name}, or a single other release file with ${STRICT_XATTR}=0, and this one is not ${others.length > 0 ? 'that' : 'a regular file'}${others.length > 0 ? noXattr : ''}.`,
      `Rename it to ${file}, install with --name ${named[0]}, or set the xattr: setfattr -n ${STRICT_XATTR} -v 0 FILE.`)}
  return {kind: 'finding', finding: error('release-missing', file, `No ${file}; systemd-sysext ignores extension '${name}' without it.`, GENERATE_HINT)}
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
  const source = findSource(ctx, name, candidates)
  if (source.kind === 'finding') return [source.finding]
  const {file, raw, via} = source
  const entry = ctx.tree.entries.get(file)
  if (raw === undefined)
    return [error('release-unparsable', file, `${file}${via} cannot be read (${entry?.readError ?? 'unknown error'}).`, 'Make it readable by root (mode 0644).')]
  const parsed = parseRelease(raw, {kind: 'extension-release', systemdVersion: ctx.host.systemdVersion})
  if (parsed.error !== undefined)
    return [error('release-unparsable', file, `${file}${via} cannot be read as an env file: ${parsed.error}; systemd-sysext fails to load it and the merge fails.`,
      'Write it as UTF-8 text with one KEY=VALUE a line (no NUL bytes).')]
  if (Object.keys(parsed.fields).length === 0)
    return [error('release-empty', file, `${file}${via} has no KEY=VALUE assignment; systemd-sysext ignores extension '${name}'.`, 'Write at least ID=_any (or the host ID and VERSION_ID) into it.')]
  const verdict = judgeRelease(name, parsed.fields, ctx.host)
  if (!verdict.accepted) return [error(verdict.rule, file, verdict.message + (via ? ` Read from ${file}${via}.` : ''), verdict.hint)]
  return []
}

export const releaseRules: RuleSet = {
  rules: {
    'release-missing': 'The tree has no usr/lib/extension-release.d/extension-release.NAME (systemd-sysext ignores it).',
    'release-ambiguous': 'Several release files and no --name, or several fallback files with user.extension-release.strict=0.',
    'release-name-mismatch': 'The release file is named for another extension and carries no user.extension-release.strict=0 xattr.',
    'release-not-regular': 'The release file is a directory or special file, or a symlink that does not lead to a regular file inside the image.',
    'release-empty': 'The release file has no assignment (systemd ignores the image).',
    'release-unparsable': 'The release file is unreadable, or not valid UTF-8 / has NUL bytes (systemd fails to load it).',
    'release-host-id-missing': 'The host os-release has no ID= (systemd-sysext merges nothing).',
    'release-scope': 'SYSEXT_SCOPE does not include "system".',
    'release-architecture': 'ARCHITECTURE is neither _any nor the host architecture in systemd\'s names.',
    'release-id-missing': 'ID is missing or empty.',
    'release-id-mismatch': `ID is neither _any, the host ID nor (systemd >= ${ID_LIKE_SINCE}) one of the host ID_LIKE.`,
    'release-id-like': `ID matches only the host ID_LIKE, but the host systemd is older than ${ID_LIKE_SINCE}.`,
    'release-sysext-level-mismatch': 'SYSEXT_LEVEL differs from the host SYSEXT_LEVEL.',
    'release-version-id-missing': 'The host has VERSION_ID (and no matching SYSEXT_LEVEL) but the release has no VERSION_ID.',
    'release-version-id-mismatch': 'VERSION_ID differs from the host VERSION_ID.',
  },
  check,
}
