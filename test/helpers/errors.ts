import assert from 'node:assert/strict';

/** assert.throws/rejects validator: one line, starting with the file's path, matching `fragment`. */
export const oneLine = (path: string, fragment: RegExp) => (e: unknown) => {
  assert.ok(e instanceof Error);
  assert.ok(!e.message.includes('\n'), e.message);
  assert.ok(e.message.startsWith(path), e.message);
  assert.match(e.message, fragment);
  return true;
};
