export default Queue

function Queue(initial = []) {
  let xs = initial.slice()
  let index = 0

  return {
    get length() {
      return xs.length - index
    },
    // PATCHED: the slots held, live or shifted, so a test can see the queue stay small
    get capacity() {
      return xs.length
    },
    remove: (x) => {
      // PATCHED: only the live part is searched
      const index_ = xs.indexOf(x, index)
      return index_ === -1
        ? null
        : (xs.splice(index_, 1), x)
    },
    push: (x) => (xs.push(x), x),
    shift: () => {
      const out = xs[index++]

      if (index === xs.length) {
        index = 0
        xs = []
      } else if (index >= 64 && index * 2 >= xs.length) {
        // PATCHED: a queue that never empties (shifted from and removed from in turn,
        // as the pool's queue of open connections is under load) dropped its shifted
        // slots only once empty, so it grew without bound and every remove() searched
        // and spliced the whole of it.
        xs = xs.slice(index)
        index = 0
      } else {
        xs[index - 1] = undefined
      }

      return out
    }
  }
}
