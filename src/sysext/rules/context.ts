import type {Finding} from '../findings.js'
import {type Host, resolveMerged} from '../host.js'
import type {Tree} from '../tree.js'

export interface RuleContext {
  tree: Tree
  host: Host
  /** The extension name the host will see (image name), when known. */
  name: string | undefined
  /** 'flatpak' when the tree is an app's deployed lib/extensions. */
  origin: 'path' | 'flatpak'
  /** Extras the admin granted this extension (see confinement.ts). */
  allow?: readonly string[]
}

/** A group of rules: their ids with one-line descriptions, and the check. */
export interface RuleSet {
  /** rule id -> what it checks (one line; listed by `sysext-helper rules`). */
  rules: Record<string, string>
  check(ctx: RuleContext): Finding[]
}

/**
 * Whether `path` (absolute) exists on the host other than as this extension's own
 * merged file. Host symlinks are followed first (/lib -> usr/lib on merged-/usr hosts),
 * since the extension's image holds the file under its real path.
 */
export function onHost(ctx: RuleContext, path: string): boolean {
  if (ctx.host.lstat(path) === undefined) return false
  const real = resolveMerged(undefined, ctx.host, path)?.path ?? path
  const own = ctx.name ?? ''
  return ctx.host.extensionProviding(path) !== own && ctx.host.extensionProviding(real) !== own
}
