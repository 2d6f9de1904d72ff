/**
 * The install plan: pure, from a validated tree, the state and what the host
 * shows now, to what install will do (or why it must not).
 */
import {existsSync} from 'node:fs'
import {join, resolve} from 'node:path'
import {HelperError} from '../errors.js'
import {type Declarations, contentHash, declarations} from '../sysext/declarations.js'
import type {Finding} from '../sysext/findings.js'
import type {ImageEntry} from './links.js'
import {isStageDir} from './state-schema.js'
import {type Drift, describeDrift} from './manifest.js'
import type {SourceTrust} from '../sysext/tree-copy.js'
import {parseRelease} from '../formats/os-release.js'
import {type ReleasePlan, planRelease} from '../sysext/release-writer.js'
import {releasePath} from '../sysext/release.js'
import {type ExtensionSource, type ManagedExtension, type Paths, type State, type TargetKind, stageRoot} from './state.js'
import type {Validated} from '../sysext/validate.js'

/** Release findings that install cures by generating a release file in a staged copy. */
const CURED_BY_STAGING = new Set(['release-missing'])

export type InstallAction = 'install' | 'update' | 'repair' | 'unchanged'

export interface InstallPlan {
  name: string
  action: InstallAction
  source: ExtensionSource
  target: TargetKind
  link: string
  /** 'in-place': the link points at the source tree; 'stage': at a copy under the state directory. */
  mode: 'in-place' | 'stage'
  /** Why the tree is staged rather than linked in place. */
  stageReasons: string[]
  linkTarget: string
  /** Present when a new stage is created. */
  newStage?: string
  /** The validated copy (under the stage root) that becomes newStage. */
  incoming?: string
  /** The live content of the previous install differs from what was validated. */
  drift?: Drift
  /** The uid the source was read as. */
  readAs: number
  /** Present when install writes the release file (into the stage). */
  release?: ReleasePlan
  /** The merged tree's release file is generated (the source has none). */
  releaseGenerated: boolean
  hash: string
  declarations: Declarations
  reloadManager: boolean
  previous?: ManagedExtension
  /** The entry at the link path before this run (null: none). */
  previousLink: {link: string; target: string} | null
  /** Links of this extension in other target directories, removed when it moves. */
  staleLinks: Array<{link: string; target: string}>
  warnings: Finding[]
  /** Extras granted for this install (recorded with the extension). */
  allow: string[]
}

export interface PlanInput {
  validated: Validated
  state: State
  paths: Paths
  targetKind: TargetKind
  entries: ImageEntry[]
  merged: string[]
  /** inspectSource() of the source tree. */
  trust: SourceTrust
  /** The validated copy of the source, when the tree was staged (validated is its scan). */
  incoming?: string
  /** compareManifest() of the previous install's live content. */
  drift?: Drift
  forceStage?: boolean
}

/** Pure: decides what install will do, or throws why it must not. */
export function planInstall(input: PlanInput): InstallPlan {
  const {validated, state, paths, targetKind, entries, merged} = input
  const {report, tree, host, target} = validated
  const name = report.name
  if (name === null)
    throw new HelperError('INSTALL_NEEDS_NAME', `Cannot tell the extension name of '${report.path}'.`, {exit: 2, hint: 'Pass --name (for a Flatpak app: its app id).'})

  const previous = state.extensions[name]
  const drifted = input.drift?.drifted === true
  const blocking = report.findings.filter((f) => f.severity === 'error' && !CURED_BY_STAGING.has(f.rule))
  if (blocking.length > 0) {
    const live = drifted && previous
      ? ` The merged content of the installed ${name} (${previous.linkTarget}) is not the one that was validated (${describeDrift(input.drift as Drift)}) and stays merged until you remove it.`
      : ''
    throw new HelperError('INSTALL_INVALID', `${name} was not installed: validation found ${blocking.length} error${blocking.length === 1 ? '' : 's'}.${live}`, {
      step: 'validate',
      hint: live
        ? `Run 'sysext-helper uninstall ${name}' now to take the unvalidated content out of /usr; then fix the tree ('sysext-helper validate ${target.app ? name : report.path}') and install again.`
        : `Run 'sysext-helper validate ${target.app ? name : report.path}' for details, fix the tree, and install again.`,
      data: {findings: blocking, ...(live ? {drift: input.drift} : {})},
    })
  }

  const link = join(paths.targets[targetKind], name)
  const foreign = entries.filter((e) => !(previous && e.path === previous.link))
  const shadowing = foreign.filter((e) => e.type !== 'symlink' || !isStageDir(paths, name, e.target))
  if (shadowing.length > 0)
    throw new HelperError('INSTALL_NAME_TAKEN', `An extension named '${name}' already exists at ${shadowing.map((e) => e.path).join(', ')} and is not managed by sysext-helper.`, {
      step: 'plan',
      hint: `Remove it first (or 'sysext-helper uninstall ${name} --force' for a symlink), or install under another --name.`,
    })

  const needsRelease = report.findings.some((f) => f.rule === 'release-missing')
  const stageReasons: string[] = []
  if (needsRelease) stageReasons.push('the tree has no release file; one is generated in the staged copy')
  if (target.origin === 'flatpak') stageReasons.push('Flatpak deletes old deploys on update; the merged copy must not live inside one')
  if (input.forceStage) stageReasons.push('a staged copy was requested')
  if (!input.trust.trusted) stageReasons.push(`the source can be changed or swapped by a non-root user (${input.trust.reasons.slice(0, 3).join('; ')}); it was read as uid ${input.trust.reader.uid}`)
  else if (!input.trust.allRoot || report.findings.some((f) => f.rule === 'file-owner' || f.rule === 'layout-hardlink-outside'))
    stageReasons.push('some files are not owned by root; the staged copy is root-owned')

  const release = needsRelease ? planRelease(tree, host, {name}) : undefined
  const hash = contentHash(tree, release?.content ?? '')
  const mode = stageReasons.length > 0 ? 'stage' : 'in-place'
  const existingRelease = tree.entries.get(releasePath(name))?.text
  const reloadManager = parseRelease(release?.content ?? existingRelease ?? '').fields.EXTENSION_RELOAD_MANAGER === '1'

  if (mode === 'stage' && input.incoming === undefined)
    throw new HelperError('INSTALL_NEEDS_STAGE', `${name} must be staged (${stageReasons.join('; ')}).`, {step: 'plan'})
  // A tree linked in place stays so only while nobody but root can change it (e.g. not after a chown).
  const placeStillSafe = previous?.stage !== undefined || input.trust.allRoot
  const samePlace = previous && previous.target === targetKind && previous.hash === hash && !drifted && placeStillSafe
  const linkEntry = entries.find((e) => e.path === link)
  const previousLink = linkEntry?.type === 'symlink' ? {link, target: linkEntry.target as string} : null
  let action: InstallAction = previous ? 'update' : 'install'
  let linkTarget = mode === 'stage' ? join(stageRoot(paths), `${name}-${hash.slice(0, 16)}`) : resolve(report.path)
  // A stage of the same content that drifted (or a leftover) is never reused: a fresh name.
  let newStage: string | undefined = mode === 'stage' ? linkTarget : undefined
  if (mode === 'stage' && existsSync(linkTarget)) {
    // The previous install's stage of this very content, intact: linked again as it is.
    if (!drifted && previous?.linkTarget === linkTarget) newStage = undefined
    else newStage = linkTarget = `${linkTarget}-${Date.now().toString(36)}`
  }
  if (samePlace && previousLink?.target === previous.linkTarget && (!previous.stage || existsSync(previous.stage))) {
    // Same content, same place: keep the existing stage; refresh only if it is not merged (e.g. after a reboot).
    linkTarget = previous.linkTarget
    newStage = undefined
    action = merged.includes(name) ? 'unchanged' : 'repair'
  }
  const staleLinks = entries.filter((e) => previous && e.path === previous.link && e.path !== link && e.type === 'symlink')
    .map((e) => ({link: e.path, target: e.target as string}))

  return {
    name,
    action,
    source: {
      kind: target.origin,
      path: target.app ? target.app.extensions : resolve(report.path),
      appId: target.app?.appId,
      installation: target.app?.installation.path,
      commit: target.app?.commit,
    },
    target: targetKind,
    link,
    mode,
    stageReasons,
    linkTarget,
    newStage,
    incoming: newStage ? input.incoming : undefined,
    readAs: input.trust.reader.uid,
    drift: input.drift,
    release: newStage ? release : undefined,
    releaseGenerated: needsRelease,
    hash,
    declarations: declarations(tree),
    reloadManager,
    previous,
    previousLink,
    staleLinks,
    allow: report.allowed,
    warnings: report.findings.filter((f) => f.severity === 'warning'),
  }
}
