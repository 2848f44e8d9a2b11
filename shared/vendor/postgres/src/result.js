// PATCHED: the five result fields live in one hidden record, made on first write,
// instead of five properties defined on every result (a slow path for an Array
// subclass, paid once per query). They stay off the array's own enumerable keys.
const meta = Symbol('meta')

export default class Result extends Array {
  static get [Symbol.species]() {
    return Array
  }
}

for (const name of ['count', 'state', 'command', 'columns', 'statement']) {
  Object.defineProperty(Result.prototype, name, {
    get() {
      const m = this[meta]
      return m === undefined ? null : m[name]
    },
    set(value) {
      let m = this[meta]
      if (m === undefined) {
        m = { count: null, state: null, command: null, columns: null, statement: null }
        Object.defineProperty(this, meta, { value: m })
      }
      m[name] = value
    }
  })
}
