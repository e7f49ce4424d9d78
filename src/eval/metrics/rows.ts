/** Throws unless there are predictions and as many reference rows (the scorers' shared check). */
export function checkRows(what: string, n: number, m: number): void {
  if (n === 0) throw new RangeError(`${what}: no predictions to score`);
  if (n !== m) throw new RangeError(`${what}: ${n} predictions but ${m} reference lists`);
}
