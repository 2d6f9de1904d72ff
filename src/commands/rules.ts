import {BaseCommand} from '../cli/base-command.js'
import {allRules} from '../sysext/index.js'

export default class Rules extends BaseCommand {
  static summary = 'List every validation rule id with what it checks.'
  static examples = ['<%= config.bin %> rules', '<%= config.bin %> rules --json']

  async run(): Promise<{rules: Array<{rule: string; description: string}>}> {
    await this.parse(Rules)
    const rules = Object.entries(allRules()).map(([rule, description]) => ({rule, description}))
    if (!this.jsonEnabled()) for (const r of rules) this.log(`${r.rule.padEnd(34)} ${r.description}`)
    return {rules}
  }
}
