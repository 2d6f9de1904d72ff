/** Runs the rules over a fixture tree against a fixture host (no CLI). */
import {loadHost} from '../../src/sysext/host.js'
import type {Finding} from '../../src/sysext/findings.js'
import {scanTree} from '../../src/sysext/tree.js'
import {runRules} from '../../src/sysext/validate.js'
import {DEBIAN_12, makeHostRoot} from './fixtures.js'

let defaultHost: string | undefined

export function findingsFor(treeRoot: string, options: {name?: string; hostRoot?: string; origin?: 'path' | 'flatpak'} = {}): Finding[] {
  const hostRoot = options.hostRoot ?? (defaultHost ??= makeHostRoot(DEBIAN_12))
  return runRules({tree: scanTree(treeRoot), host: loadHost(hostRoot), name: options.name, origin: options.origin ?? 'path'})
}

export function rulesOf(findings: Finding[]): string[] {
  return findings.map((f) => f.rule)
}
