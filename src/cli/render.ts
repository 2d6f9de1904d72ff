/** Human renderings of results and errors. Plain text: grep-able, no colour codes when piped. */
import type {HelperError} from '../errors.js'
import type {Finding} from '../sysext/index.js'
import type {InstallResult} from '../lifecycle/index.js'
import type {ValidationReport} from '../sysext/index.js'

const tty = process.stdout.isTTY === true && process.env.NO_COLOR === undefined
const paint = (code: string, text: string): string => (tty ? `\u001b[${code}m${text}\u001b[0m` : text)
export const bold = (text: string): string => paint('1', text)
export const red = (text: string): string => paint('31', text)
export const yellow = (text: string): string => paint('33', text)
export const green = (text: string): string => paint('32', text)

export function renderError(error: HelperError): string {
  let out = `Error: ${error.message}\n`
  // Validation findings that refused an install: show them, not just their count.
  const findings = (error.data?.findings ?? []) as Finding[]
  for (const f of findings) out += `  ${f.file}: ${f.message} [${f.rule}]\n    Hint: ${f.hint}\n`
  if (error.hint) out += `Hint: ${error.hint}\n`
  return out
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}

/** Findings grouped by file, then a one-line verdict. */
export function renderValidation(report: ValidationReport): string {
  const byFile = new Map<string, Finding[]>()
  for (const f of report.findings) byFile.set(f.file, [...(byFile.get(f.file) ?? []), f])
  const lines: string[] = []
  for (const [file, findings] of byFile) {
    lines.push(bold(file === '' ? '(tree)' : file))
    for (const f of findings) {
      const sev = f.severity === 'error' ? red('error  ') : yellow('warning')
      lines.push(`  ${sev} ${f.message} [${f.rule}]`)
      lines.push(`          Hint: ${f.hint}`)
    }
    lines.push('')
  }
  const errors = report.findings.filter((f) => f.severity === 'error').length
  const warnings = report.findings.length - errors
  const who = report.name ?? report.path
  const host = `${report.host.id ?? 'unknown'} ${report.host.versionId ?? report.host.sysextLevel ?? '(rolling)'} ${report.host.architecture}`
  lines.push(report.ok
    ? `${green('OK')}: ${who} would be merged by this host (${host})${warnings ? `, ${plural(warnings, 'warning')}` : ''}.`
    : `${red('FAILED')}: ${who}: ${plural(errors, 'error')}${warnings ? `, ${plural(warnings, 'warning')}` : ''}; the host (${host}) would refuse it or it would not work.`)
  return `${lines.join('\n')}\n`
}

/** The closing line of install and self-install (the plan for --dry-run). */
export function renderInstall(r: InstallResult): string {
  if (r.dryRun) {
    const lines = [`Plan for ${r.name}: ${r.action}`, `  source: ${r.source.path}${r.source.commit ? ` (commit ${r.source.commit})` : ''}`,
      `  link:   ${r.link} -> ${r.linkTarget}`, `  mode:   ${r.mode}${r.stageReasons.length ? ` (${r.stageReasons.join('; ')})` : ''}`]
    if (r.declarations.busNames.length) lines.push(`  bus names: ${r.declarations.busNames.map((b) => b.name).join(', ')}`)
    if (r.declarations.polkitActions.length) lines.push(`  polkit actions: ${r.declarations.polkitActions.join(', ')}`)
    if (r.declarations.units.length) lines.push(`  units: ${r.declarations.units.join(', ')}`)
    return lines.join('\n')
  }
  if (r.action === 'unchanged') return `${r.name} is already installed and merged with the same content; nothing to do.`
  const boot = r.target === 'runtime'
    ? ' It is gone at the next reboot (runtime target).'
    : r.bootEnabled ? ' Enabled systemd-sysext.service: it is merged again at every boot.' : ''
  return `${r.name} ${r.action === 'install' ? 'installed' : r.action === 'update' ? 'updated' : 'merged again'}: ${r.link} -> ${r.linkTarget}.${boot}`
}
