import {BaseCommand} from '../cli/base-command.js'
import {green, red, yellow} from '../cli/render.js'
import {type DoctorReport, doctor} from '../lifecycle/index.js'

export default class Doctor extends BaseCommand {
  static summary = 'Report whether this host is ready for system extensions, with a fix per problem. Exit 1 when install would fail.'
  static examples = ['<%= config.bin %> doctor', '<%= config.bin %> doctor --json']

  async run(): Promise<DoctorReport> {
    await this.parse(Doctor)
    const report = await doctor()
    if (!this.jsonEnabled()) {
      for (const c of report.checks) {
        this.log(`${c.ok ? green('ok  ') : c.severity === 'error' ? red('FAIL') : yellow('warn')} ${c.id}: ${c.message}`)
        if (c.fix) this.log(`     Fix: ${c.fix}`)
      }
      for (const i of report.installations) this.log(`     Flatpak installation ${i.id}: ${i.path}${i.present ? '' : ' (absent)'}`)
    }
    if (!report.ok) process.exitCode = 1
    return report
  }
}
