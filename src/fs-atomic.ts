/** Atomic replacement of files and symlinks: write a temporary sibling, then rename over. */
import {closeSync, fsyncSync, openSync, renameSync, rmSync, symlinkSync, writeSync} from 'node:fs'
import {basename, dirname, join} from 'node:path'

function tempSibling(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now().toString(36)}.tmp`)
}

export function writeFileAtomic(path: string, content: string, mode = 0o644): void {
  const temp = tempSibling(path)
  try {
    const fd = openSync(temp, 'wx', mode)
    try {
      writeSync(fd, content)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    renameSync(temp, path)
  } catch (error) {
    rmSync(temp, {force: true})
    throw error
  }
  syncDir(dirname(path))
}

export function symlinkAtomic(target: string, path: string): void {
  const temp = tempSibling(path)
  try {
    symlinkSync(target, temp)
    renameSync(temp, path)
  } catch (error) {
    rmSync(temp, {force: true})
    throw error
  }
  syncDir(dirname(path))
}

/** fsync a directory so a rename in it survives a crash. */
export function syncDir(dir: string): void {
  const fd = openSync(dir, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}
