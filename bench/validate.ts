/**
 * Validates a generated 10,000-file extension tree (goal: <= 0.5 s) and times
 * `bin/run.js --version` (goal: <= 0.25 s). Prints medians of several runs.
 * Run: npm run build && node dist/bench/validate.js
 */
import {execFileSync} from 'node:child_process'
import {copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {validate} from '../src/sysext/validate.js'

const REPO = new URL('../../', import.meta.url).pathname

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}

function generateTree(files: number): string {
  const root = mkdtempSync(join(tmpdir(), 'sysext-bench-'))
  const name = 'org.example.Bench'
  mkdirSync(join(root, 'usr/lib/extension-release.d'), {recursive: true})
  writeFileSync(join(root, `usr/lib/extension-release.d/extension-release.${name}`), 'ID=_any\n')
  mkdirSync(join(root, 'usr/share/dbus-1/system-services'), {recursive: true})
  writeFileSync(join(root, `usr/share/dbus-1/system-services/${name}.service`), `[D-BUS Service]\nName=${name}\nExec=/usr/libexec/bench/helper-0\nUser=root\n`)
  const programs = Math.floor(files / 10)
  mkdirSync(join(root, 'usr/libexec/bench'), {recursive: true})
  for (let i = 0; i < programs; i++) copyFileSync('/bin/true', join(root, `usr/libexec/bench/helper-${i}`))
  for (let i = 0; i < files - programs - 2; i++) {
    const dir = join(root, `usr/share/${name}/d${i % 100}`)
    if (i < 100) mkdirSync(dir, {recursive: true})
    writeFileSync(join(dir, `f${i}.txt`), `data ${i}\n`)
  }
  return root
}

const tree = generateTree(10_000)
try {
  const times: number[] = []
  let findings = 0
  for (let run = 0; run < 7; run++) {
    const started = performance.now()
    findings = validate(tree, {name: 'org.example.Bench'}).report.findings.length
    times.push(performance.now() - started)
  }
  console.log(`validate 10,000 files (1,000 ELF programs): median ${median(times).toFixed(0)} ms over ${times.length} runs (goal 500 ms), ${findings} findings`)
  const cli: number[] = []
  for (let run = 0; run < 7; run++) {
    const started = performance.now()
    execFileSync(process.execPath, [join(REPO, 'bin/run.js'), '--version'])
    cli.push(performance.now() - started)
  }
  console.log(`bin/run.js --version: median ${median(cli).toFixed(0)} ms over ${cli.length} runs (goal 250 ms)`)
  const cliValidate: number[] = []
  for (let run = 0; run < 5; run++) {
    const started = performance.now()
    execFileSync(process.execPath, [join(REPO, 'bin/run.js'), 'validate', tree, '--name', 'org.example.Bench', '--json'], {maxBuffer: 1 << 26})
    cliValidate.push(performance.now() - started)
  }
  console.log(`bin/run.js validate (whole process, 10,000 files): median ${median(cliValidate).toFixed(0)} ms`)
} finally {
  rmSync(tree, {recursive: true, force: true})
}
