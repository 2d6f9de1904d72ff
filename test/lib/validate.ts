/** Runs the rules over a fixture tree against a fixture host (no CLI). */
import assert from 'node:assert/strict'
import type {Finding, Severity} from '../../src/sysext/findings.js'
import {loadHost} from '../../src/sysext/host.js'
import type {RuleSet} from '../../src/sysext/rules/context.js'
import {scanTree} from '../../src/sysext/tree.js'
import {runRules} from '../../src/sysext/validate.js'
import {DEBIAN_12, type FileSpec, makeHostRoot, makeTree} from './fixtures.js'

let defaultHost: string | undefined

export function findingsFor(treeRoot: string, options: {name?: string; hostRoot?: string; origin?: 'path' | 'flatpak'; allow?: string[]} = {}): Finding[] {
  const hostRoot = options.hostRoot ?? (defaultHost ??= makeHostRoot(DEBIAN_12))
  return runRules({tree: scanTree(treeRoot), host: loadHost(hostRoot), name: options.name, origin: options.origin ?? 'path', allow: options.allow})
}

export function rulesOf(findings: Finding[]): string[] {
  return findings.map((f) => f.rule)
}

/** Runs one rule set over a tree built from `files`, against a Debian 12 host holding `hostFiles`. */
export function checkRuleSet(ruleSet: RuleSet, files: Record<string, FileSpec>, hostFiles: Record<string, FileSpec> = {}, allow: string[] = [], name?: string): Finding[] {
  return ruleSet.check({tree: scanTree(makeTree(files)), host: loadHost(makeHostRoot(DEBIAN_12, hostFiles)), name, origin: 'path', allow})
}

/** Asserts a finding of `rule` with `severity` on `file` (one-line message and hint), and returns it. */
export function assertFinding(findings: Finding[], rule: string, severity: Severity, file: string): Finding {
  const found = findings.find((f) => f.rule === rule && f.file === file)
  assert.ok(found, `expected ${rule} on ${file}, got ${JSON.stringify(findings.map((f) => [f.rule, f.file]))}`)
  assert.equal(found.severity, severity)
  assert.ok(!found.message.includes('\n') && !found.hint.includes('\n'), 'message and hint are one line')
  return found
}

export function assertNo(findings: Finding[], rule: string): void {
  assert.deepEqual(findings.filter((f) => f.rule === rule), [])
}
