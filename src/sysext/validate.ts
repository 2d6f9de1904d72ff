/**
 * validate: resolve what to judge (a path or an installed Flatpak app), scan it,
 * run every rule against the host. Scanning and host loading are the only IO.
 */
import {existsSync} from 'node:fs'
import {join, resolve} from 'node:path'
import {HelperError} from '../errors.js'
import {type AppDeploy, type FlatpakEnv, findApp, looksLikeAppId} from '../flatpak/installations.js'
import type {Finding} from './findings.js'
import {type Host, loadHost} from './host.js'
import type {RuleContext} from './rules/context.js'
import {RULE_SETS} from './rules/index.js'
import {releaseCandidates} from './rules/release.js'
import {type Tree, scanTree} from './tree.js'
import type {SourceOwner} from './tree-copy.js'

export interface TargetOptions extends FlatpakEnv {
  /** --installation: restrict app lookup to this installation. */
  installationPath?: string
}

export interface ResolvedTarget {
  /** Absolute path of the extension tree. */
  path: string
  origin: 'path' | 'flatpak'
  app?: AppDeploy
}

/** A PATH (anything with a slash, or an existing directory) or an installed app id. */
export function resolveTarget(target: string, options: TargetOptions = {}): ResolvedTarget {
  if (looksLikeAppId(target) && !existsSync(target)) {
    const app = findApp(target, options)
    if (!existsSync(app.extensions))
      throw new HelperError('APP_HAS_NO_EXTENSIONS',
        `${target} (${app.installation.path}) ships no system extension: ${app.extensions} does not exist.`,
        {hint: 'Only apps that ship files/lib/extensions/usr/... can be validated or installed.'})
    // Pinned to the deploy that `active` points to now: flatpak may switch it while we read.
    return {path: join(app.deployDir, 'files', 'lib', 'extensions'), origin: 'flatpak', app}
  }
  return {path: resolve(target), origin: 'path'}
}

export interface HostSummary {
  root: string
  osRelease: string
  id: string | null
  versionId: string | null
  sysextLevel: string | null
  architecture: string
  systemdVersion: number | null
}

export interface ValidationReport {
  name: string | null
  path: string
  origin: 'path' | 'flatpak'
  host: HostSummary
  /** Extras granted for this judgement (--allow). */
  allowed: string[]
  findings: Finding[]
  ok: boolean
}

export function summarizeHost(host: Host): HostSummary {
  return {
    root: host.root,
    osRelease: host.osReleasePath,
    id: host.osRelease.ID ?? null,
    versionId: host.osRelease.VERSION_ID ?? null,
    sysextLevel: host.osRelease.SYSEXT_LEVEL ?? null,
    architecture: host.architecture,
    systemdVersion: host.systemdVersion ?? null,
  }
}

/** --name, else the app id, else the single release file's name. */
export function extensionName(tree: Tree, explicit: string | undefined, app: AppDeploy | undefined): string | undefined {
  if (explicit !== undefined) return explicit
  if (app) return app.appId
  const candidates = releaseCandidates({tree})
  return candidates.length === 1 ? candidates[0] : undefined
}

const SEVERITY_ORDER = {error: 0, warning: 1}

/** Pure: every rule over a scanned tree. `strict` turns warnings into errors. */
export function runRules(ctx: RuleContext, strict = false): Finding[] {
  const findings = RULE_SETS.flatMap((set) => set.check(ctx))
  if (strict) for (const f of findings) f.severity = 'error'
  return findings.sort((a, b) => a.file.localeCompare(b.file) || SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity] || a.rule.localeCompare(b.rule))
}

export interface ValidateOptions extends TargetOptions {
  name?: string
  hostRoot?: string
  strict?: boolean
  /** Extras the admin grants this extension (confinement.ts EXTRAS). */
  allow?: readonly string[]
}

export interface Validated {
  report: ValidationReport
  tree: Tree
  host: Host
  target: ResolvedTarget
}

export function validate(target: string, options: ValidateOptions = {}): Validated {
  const resolved = resolveTarget(target, options)
  return validateTree(scanTree(resolved.path), resolved, options)
}

/**
 * Judges an already scanned tree (install: the staged copy) as the tree of
 * `resolved`. `owners` carries the source's ownership and link counts for a copy
 * (the copy is root-owned with fresh inodes; the rules judge who owned the files
 * that were read and how they were linked there).
 */
export function validateTree(tree: Tree, resolved: ResolvedTarget, options: ValidateOptions = {}, owners?: Map<string, SourceOwner>): Validated {
  const host = loadHost(options.hostRoot ?? '/')
  if (owners)
    for (const entry of tree.entries.values()) {
      const o = owners.get(entry.path)
      if (o) Object.assign(entry, {uid: o.uid, gid: o.gid, nlink: o.nlink, ino: o.ino, mode: (entry.mode & ~0o7777) | o.mode})
    }
  const name = extensionName(tree, options.name, resolved.app)
  const findings = runRules({tree, host, name, origin: resolved.origin, allow: options.allow}, options.strict)
  return {
    tree,
    host,
    target: resolved,
    report: {
      name: name ?? null,
      path: resolved.path,
      origin: resolved.origin,
      host: summarizeHost(host),
      allowed: [...(options.allow ?? [])],
      findings,
      ok: !findings.some((f) => f.severity === 'error'),
    },
  }
}
