/** XML as the rules need it: elements with attributes and start lines, from fast-xml-parser. */
import {XMLParser, XMLValidator} from 'fast-xml-parser'

export interface XmlElement {
  name: string
  attrs: Record<string, string>
  children: XmlElement[]
  /** Concatenated direct text content, trimmed. */
  text: string
  /** 1-based line of the start tag. */
  line: number
}

const META = XMLParser.getMetaDataSymbol() as unknown as symbol
const xmlParser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  parseTagValue: false,
  parseAttributeValue: false,
  captureMetaData: true,
})

type OrderedNode = Record<string, unknown> & {':@'?: Record<string, string>}

/**
 * A well-formed XML document's single root element, or where it is not
 * well-formed.
 */
export function parseXml(text: string): {root: XmlElement} | {line: number; message: string} {
  const valid = XMLValidator.validate(text)
  if (valid !== true) return {line: valid.err.line, message: valid.err.msg}
  const lineStarts = [0]
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) lineStarts.push(i + 1)
  const lineOf = (index: number): number => {
    let low = 0
    let high = lineStarts.length - 1
    while (low < high) {
      const mid = (low + high + 1) >> 1
      if (lineStarts[mid] <= index) low = mid
      else high = mid - 1
    }
    return low + 1
  }
  const convert = (nodes: OrderedNode[]): {elements: XmlElement[]; text: string} => {
    const elements: XmlElement[] = []
    let content = ''
    for (const node of nodes) {
      const name = Object.keys(node).find((k) => k !== ':@')
      if (name === undefined || name.startsWith('?')) continue
      if (name === '#text') {
        content += String(node[name])
        continue
      }
      const inner = convert(node[name] as OrderedNode[])
      const meta = (node as Record<symbol, {startIndex?: number} | undefined>)[META]
      elements.push({name, attrs: node[':@'] ?? {}, children: inner.elements, text: inner.text.trim(),
        line: lineOf(meta?.startIndex ?? 0)})
    }
    return {elements, text: content}
  }
  const top = convert(xmlParser.parse(text) as OrderedNode[]).elements
  if (top.length !== 1)
    return {line: top[1]?.line ?? 1, message: top.length === 0 ? 'no root element' : `more than one root element (<${top[0].name}>, <${top[1].name}>)`}
  return {root: top[0]}
}

/** All elements below (and including) `element`, depth first. */
export function descendants(element: XmlElement): XmlElement[] {
  return [element, ...element.children.flatMap(descendants)]
}
