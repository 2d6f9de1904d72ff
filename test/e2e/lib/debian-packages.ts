/**
 * Real Debian packages' files as extension trees: downloaded once with this
 * machine's apt (cached next to the test roots), unpacked, and laid out as an
 * extension would ship them: split-usr lib/ moved under usr/, and what
 * systemd-sysext never merges (etc/, var/) left out, as a packager converting
 * the package would.
 */
import {execFileSync} from 'node:child_process'
import {cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {cacheDir} from './hosts.js'

/** The .deb of `pkg` for this machine's suite, downloaded once into the cache. */
export function downloaded(pkg: string): string {
  const dir = join(cacheDir(), 'debs')
  mkdirSync(dir, {recursive: true})
  const find = (): string | undefined => readdirSync(dir).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'))
  if (!find()) {
    const download = (): void => {
      execFileSync('apt-get', ['download', '-qq', pkg], {cwd: dir, stdio: ['ignore', 'ignore', 'pipe']})
    }
    try {
      download()
    } catch {
      // A fresh machine has no package lists yet.
      execFileSync('apt-get', ['update', '-qq'], {stdio: 'ignore'})
      download()
    }
  }
  return join(dir, find() as string)
}

/** A fresh extension tree of `pkg`'s files (removed when the test process exits). */
export function debianPackageTree(pkg: string): string {
  const tree = mkdtempSync(join(tmpdir(), `sysext-deb-${pkg}-`))
  process.once('exit', () => rmSync(tree, {recursive: true, force: true}))
  execFileSync('dpkg-deb', ['-x', downloaded(pkg), tree])
  if (existsSync(join(tree, 'lib'))) {
    cpSync(join(tree, 'lib'), join(tree, 'usr/lib'), {recursive: true})
    rmSync(join(tree, 'lib'), {recursive: true})
  }
  for (const dropped of ['etc', 'var']) rmSync(join(tree, dropped), {recursive: true, force: true})
  return tree
}
