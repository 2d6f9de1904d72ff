import type {RuleSet} from './context.js'

export const executablesRules: RuleSet = {
  rules: {},
  check: () => [],
}
