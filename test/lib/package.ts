/**
 * The npm package as a user gets it: `npm pack` of a copy of this checkout's
 * tracked files (so prepack builds it from scratch, as from a fresh clone, without
 * touching this checkout's dist/), installed globally into a scratch prefix.
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {REPO_ROOT} from './fixtures.js'

let packed: string | undefined

/** Packs the package once per test process; returns the tarball path. */
export function packedTarball(): string {
  if (packed) return packed
  const work = mkdtempSync(join(tmpdir(), 'sysext-pack-'))
  process.once('exit', () => rmSync(work, {recursive: true, force: true}))
  const copy = join(work, 'src')
  const tracked = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {cwd: REPO_ROOT, encoding: 'utf8'}).split('\0').filter(Boolean)
  for (const file of tracked) {
    mkdirSync(dirname(join(copy, file)), {recursive: true})
    cpSync(join(REPO_ROOT, file), join(copy, file), {verbatimSymlinks: true})
  }
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(copy, 'node_modules'))
  const r = spawnSync('npm', ['pack', '--pack-destination', work], {cwd: copy, encoding: 'utf8'})
  if (r.status !== 0) throw new Error(`npm pack failed: ${r.stderr}`)
  const tgz = readdirSync(work).find((f) => f.endsWith('.tgz'))
  if (!tgz) throw new Error(`npm pack wrote no tarball: ${r.stdout}`)
  packed = join(work, tgz)
  return packed
}

/** `npm install -g` of the tarball into `prefix`; returns npm's output (stdout and stderr). */
export function installGlobally(tarball: string, prefix: string): string {
  const r = spawnSync('npm', ['install', '-g', '--no-audit', '--no-fund', '--prefix', prefix, tarball], {cwd: tmpdir(), encoding: 'utf8'})
  if (r.status !== 0) throw new Error(`npm install -g failed: ${r.stderr}`)
  return `${r.stdout}${r.stderr}`
}
