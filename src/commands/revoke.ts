import {Args} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {createReporter} from '../cli/reporter.js'
import {type ApprovalResult, revoke} from '../lifecycle/index.js'

export default class Revoke extends BaseCommand {
  static summary = "Withdraw the approval of a Flatpak app's system extension, and uninstall it if merged."
  static examples = ['<%= config.bin %> revoke org.gnome.Sysprof']
  static args = {app: Args.string({description: 'Flatpak app id', required: true})}

  async run(): Promise<ApprovalResult> {
    const {args} = await this.parse(Revoke)
    const result = await revoke(args.app, await createReporter(this.jsonEnabled()))
    if (!this.jsonEnabled()) this.log(`${result.appId} is no longer approved${result.uninstalled ? `; ${result.uninstalled} was uninstalled` : ''}.`)
    return result
  }
}
