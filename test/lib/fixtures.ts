/** Small trees built in the test itself, so the input sits next to the assertion. */
import {execFileSync} from 'node:child_process'
import {chmodSync, lchownSync, linkSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'

const scratch: string[] = []
process.once('exit', () => {
  for (const dir of scratch) rmSync(dir, {recursive: true, force: true})
})

export type FileSpec =
  | string
  | {content?: string | Buffer; mode?: number; symlink?: string; dir?: true; fifo?: true; uid?: number; link?: string}

/**
 * Creates a temporary directory holding `files` (relative path -> content or
 * spec). Directories are created as needed. Removed when the test process exits
 * (not per test: fixtures may be shared between tests of a file).
 */
export function makeTree(files: Record<string, FileSpec>): string {
  const root = mkdtempSync(join(tmpdir(), 'sysext-test-'))
  scratch.push(root)
  for (const [rel, spec] of Object.entries(files)) {
    const abs = join(root, rel)
    mkdirSync(dirname(abs), {recursive: true})
    if (typeof spec === 'string') {
      writeFileSync(abs, spec)
      continue
    }
    if (spec.dir) mkdirSync(abs, {recursive: true})
    else if (spec.symlink !== undefined) symlinkSync(spec.symlink, abs)
    else if (spec.fifo) execFileSync('mkfifo', [abs])
    else if (spec.link !== undefined) linkSync(spec.link, abs)
    else writeFileSync(abs, spec.content ?? '')
    if (spec.uid !== undefined) lchownSync(abs, spec.uid, spec.uid)
    if (spec.mode !== undefined && spec.symlink === undefined) chmodSync(abs, spec.mode)
  }
  return root
}

/** A minimal host root: os-release plus whatever files are given. */
export function makeHostRoot(osRelease: FileSpec, files: Record<string, FileSpec> = {}): string {
  return makeTree({'etc/os-release': osRelease, ...files})
}

export const DEBIAN_12 = 'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'

/** The repository root (tests run from dist/test/...). */
export const REPO_ROOT = new URL('../../../', import.meta.url).pathname.replace(/\/$/, '')
/** The CLI entry point, for running commands as subprocesses. */
export const CLI = `${REPO_ROOT}/bin/run.js`
