/** The self-contained sysext-helper extension for e2e tests. */
import {execFileSync} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {type Host, REPO_ROOT} from './hosts.js'

let built: string | undefined

/**
 * Builds the extension tree once per test process, into a scratch directory
 * (npm run test:e2e rebuilds dist/, which would remove dist/extension).
 */
export function builtExtension(): string {
  if (built) return built
  const dir = mkdtempSync(join(tmpdir(), 'sysext-helper-ext-'))
  process.once('exit', () => rmSync(dir, {recursive: true, force: true}))
  execFileSync(process.execPath, [join(REPO_ROOT, 'dist/scripts/build-extension.js'), '--out', join(dir, 'tree')], {stdio: ['ignore', 'ignore', 'inherit']})
  built = join(dir, 'tree')
  return built
}

/** Copies the built tree into the guest at `dest`: a root-owned tree on the guest's own filesystem. */
export function copyExtensionInto(host: Host, dest: string): void {
  execFileSync('cp', ['-a', builtExtension(), join(host.root, dest)])
}
