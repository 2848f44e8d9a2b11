/**
 * `compute` with its results kept for the `kept` most recently added inputs (the oldest
 * goes first). A throw is passed on and nothing is kept for it, so only answers are kept;
 * `compute` must never answer undefined.
 */
export function remembered<T>(kept: number, compute: (input: string) => T): (input: string) => T {
  const results = new Map<string, T>();
  return (input) => {
    const known = results.get(input);
    if (known !== undefined) return known;
    const result = compute(input);
    // Insertion order makes the first key the oldest.
    if (results.size >= kept) results.delete(results.keys().next().value!);
    results.set(input, result);
    return result;
  };
}
