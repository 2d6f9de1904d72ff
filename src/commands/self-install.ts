import {Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {renderInstall} from '../cli/render.js'
import {createReporter} from '../cli/reporter.js'
import {SELF_EXTRAS, SELF_NAME, selfInstallSource} from '../lifecycle/index.js'
import {type InstallResult, install} from '../lifecycle/index.js'
import type {TargetKind} from '../lifecycle/index.js'

export default class SelfInstall extends BaseCommand {
  static summary = 'Install the extension this sysext-helper runs from (usr/bin/sysext-helper on the host).'
  static description = `Installs the sysext-helper extension tree this CLI belongs to (the tree around usr/lib/sysext-helper, or dist/extension of a checkout) under the name ${SELF_NAME}, like 'install PATH --name ${SELF_NAME}'. Use --target persistent and enable systemd-sysext.service to keep it across reboots.`
  static examples = [
    '/srv/sysext-helper/usr/lib/sysext-helper/node /srv/sysext-helper/usr/lib/sysext-helper/cli.js self-install --target persistent',
    '<%= config.bin %> self-install --dry-run',
  ]
  static flags = {
    target: Flags.string({options: ['runtime', 'local', 'persistent'], description: 'runtime: /run/extensions (gone at reboot), local: /var/lib/extensions (default), persistent: /etc/extensions; default when installed: where it is now'}),
    'dry-run': Flags.boolean({description: 'Print the plan; change nothing'}),
    'no-verify': Flags.boolean({description: 'Skip the Peer.Ping and pkaction checks'}),
    'keep-on-failure': Flags.boolean({description: 'Leave a failed installation merged for inspection instead of rolling back'}),
    timeout: Flags.integer({default: 25, min: 1, description: 'Seconds to wait for each activation check'}),
  }

  async run(): Promise<InstallResult> {
    const {flags} = await this.parse(SelfInstall)
    const {tree, target} = selfInstallSource(import.meta.url, flags.target as TargetKind | undefined)
    const result = await install(tree, {
      name: SELF_NAME,
      // Exactly what its own tree needs beyond the monitor service: the CLI on PATH, the sync .path unit, the Flatpak trigger.
      allow: SELF_EXTRAS,
      targetKind: target,
      dryRun: flags['dry-run'],
      verify: !flags['no-verify'],
      keepOnFailure: flags['keep-on-failure'],
      // The tree it runs from may be rebuilt or replaced later: merge a copy of it.
      forceStage: true,
      timeoutS: flags.timeout,
    }, await createReporter(this.jsonEnabled()))
    if (!this.jsonEnabled()) this.log(renderInstall(result))
    return result
  }
}
