/** Small trees built in the test itself, so the input sits next to the assertion. */
import {chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {after} from 'node:test'

export type FileSpec =
  | string
  | {content?: string | Buffer; mode?: number; symlink?: string; dir?: true}

/**
 * Creates a temporary directory holding `files` (relative path -> content or
 * spec). Directories are created as needed. Removed after the test file ends.
 */
export function makeTree(files: Record<string, FileSpec>): string {
  const root = mkdtempSync(join(tmpdir(), 'sysext-test-'))
  after(() => rmSync(root, {recursive: true, force: true}))
  for (const [rel, spec] of Object.entries(files)) {
    const abs = join(root, rel)
    mkdirSync(dirname(abs), {recursive: true})
    if (typeof spec === 'string') {
      writeFileSync(abs, spec)
      continue
    }
    if (spec.dir) mkdirSync(abs, {recursive: true})
    else if (spec.symlink !== undefined) symlinkSync(spec.symlink, abs)
    else writeFileSync(abs, spec.content ?? '')
    if (spec.mode !== undefined && spec.symlink === undefined) chmodSync(abs, spec.mode)
  }
  return root
}

/** A minimal host root: os-release plus whatever files are given. */
export function makeHostRoot(osRelease: string, files: Record<string, FileSpec> = {}): string {
  return makeTree({'etc/os-release': osRelease, ...files})
}

export const DEBIAN_12 = 'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'
