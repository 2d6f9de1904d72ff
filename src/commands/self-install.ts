import {Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {renderInstall} from '../cli/render.js'
import {createReporter} from '../cli/reporter.js'
import {type InstallResult, SELF_NAME, type TargetKind, selfInstall} from '../lifecycle/index.js'

export default class SelfInstall extends BaseCommand {
  static summary = 'Install the extension this sysext-helper runs from (usr/bin/sysext-helper on the host).'
  static description = `Installs the sysext-helper extension this CLI belongs to under the name ${SELF_NAME}: the tree around usr/lib/sysext-helper, dist/extension of a checkout, or, from an npm-installed package, a tree assembled from its bundles and the running node. It grants exactly the extras that tree needs (commands, boot-units, flatpak-triggers). Use --target persistent to keep it across reboots.`
  static examples = [
    '<%= config.bin %> self-install --target persistent',
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
    const result = await selfInstall(import.meta.url, {
      requestedTarget: flags.target as TargetKind | undefined,
      dryRun: flags['dry-run'],
      verify: !flags['no-verify'],
      keepOnFailure: flags['keep-on-failure'],
      timeoutS: flags.timeout,
    }, await createReporter(this.jsonEnabled()))
    if (!this.jsonEnabled()) this.log(renderInstall(result))
    return result
  }
}
