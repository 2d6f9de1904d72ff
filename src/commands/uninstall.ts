import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {createReporter} from '../cli/reporter.js'
import {type UninstallResult, uninstall} from '../lifecycle/index.js'

export default class Uninstall extends BaseCommand {
  static summary = 'Stop, unmerge and remove an extension installed by sysext-helper.'
  static examples = ['<%= config.bin %> uninstall org.gnome.Sysprof', '<%= config.bin %> uninstall stray-extension --force']
  static args = {name: Args.string({description: 'Extension name or Flatpak app id', required: true})}
  static flags = {
    force: Flags.boolean({description: 'Also remove a symlinked extension sysext-helper does not manage'}),
    timeout: Flags.integer({default: 25, min: 1, description: 'Seconds allowed for systemd-sysext'}),
  }

  async run(): Promise<UninstallResult> {
    const {args, flags} = await this.parse(Uninstall)
    const result = await uninstall(args.name, {force: flags.force, timeoutS: flags.timeout}, await createReporter(this.jsonEnabled()))
    if (!this.jsonEnabled()) this.log(`${result.name} removed (${result.removed.join(', ') || 'no link'}).`)
    return result
  }
}
