import type {RuleSet} from './context.js'

export const dbusRules: RuleSet = {
  rules: {},
  check: () => [],
}
