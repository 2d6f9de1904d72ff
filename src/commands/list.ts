import {BaseCommand} from '../cli/base-command.js'
import {type Listing, listExtensions} from '../lifecycle/index.js'

export default class List extends BaseCommand {
  static summary = 'List managed extensions and the foreign ones systemd-sysext sees.'
  static examples = ['<%= config.bin %> list', '<%= config.bin %> list --json']

  async run(): Promise<Listing> {
    await this.parse(List)
    const {extensions, unapprovedApps, goneAfterReboot} = await listExtensions()
    if (!this.jsonEnabled()) {
      if (extensions.length === 0) this.log('No system extensions.')
      for (const e of extensions)
        this.log(`${e.name}\t${e.managed ? `managed (${e.target})` : 'foreign'}\t${e.merged ? 'merged' : 'not merged'}${e.drifted ? ', DRIFTED (see status)' : ''}\t${e.hash ? e.hash.slice(0, 12) : '-'}\t${e.source ?? e.path}${e.allow.length ? `\textras: ${e.allow.join(',')}` : ''}`)
      for (const g of goneAfterReboot) this.log(`${g}\truntime extension of an earlier boot: gone since the reboot, no longer managed`)
      for (const a of unapprovedApps) this.log(`${a.appId}\tflatpak app, NOT APPROVED\tnot merged\t-\t${a.installation} (approve with: sysext-helper install ${a.appId})`)
    }
    return {extensions, unapprovedApps, goneAfterReboot}
  }
}
