/**
 * A copy of an extension tree's merged part (usr/ and opt/ — nothing else reaches
 * the host): what install stages when the source can't be used in place (no
 * release file, a Flatpak deploy that `flatpak update` will delete, files not
 * owned by root), and what `release --output` writes.
 */
import {chmodSync, copyFileSync, linkSync, lchownSync, mkdirSync, symlinkSync} from 'node:fs'
import {join} from 'node:path'
import {type Tree, mergedEntries} from './tree.js'

export interface StageResult {
  linked: number
  copied: number
}

/**
 * Copies the merged part of `tree` into `dest` (which must not exist).
 * Root-owned files are hard-linked when the filesystem allows; others are copied
 * and chowned to root, so their owner can't change them after validation.
 */
export function stageCopy(tree: Tree, dest: string): StageResult {
  mkdirSync(dest, {recursive: false, mode: 0o755})
  const result: StageResult = {linked: 0, copied: 0}
  const canChown = process.getuid?.() === 0
  let linkable = true
  for (const entry of mergedEntries(tree)) {
    const from = join(tree.root, entry.path)
    const to = join(dest, entry.path)
    if (entry.type === 'dir') {
      mkdirSync(to, {mode: entry.mode & 0o777})
      chmodSync(to, entry.mode & 0o777)
    } else if (entry.type === 'symlink') {
      symlinkSync(entry.linkTarget as string, to)
    } else if (entry.type === 'file') {
      if (linkable && entry.uid === 0) {
        try {
          linkSync(from, to)
          result.linked++
          continue
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code
          if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw error
          linkable = code === 'EMLINK'
        }
      }
      copyFileSync(from, to)
      chmodSync(to, entry.mode & 0o777)
      result.copied++
    } else {
      continue
    }
    if (canChown) lchownSync(to, 0, 0)
  }
  return result
}
