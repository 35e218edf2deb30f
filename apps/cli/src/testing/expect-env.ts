/**
 * Whether a test's environment dependency is here. Where CI says it must be
 * (`RINGTRAIN_EXPECT_<NAME>=1`, set by .ci/run after installing it), a missing one is an error, so
 * that no test there skips silently; elsewhere the test is skipped.
 */
export function available(name: 'NETNS' | 'NUMPY' | 'TABLES' | 'CONTAINERS' | 'PIL', present: boolean, hint: string): boolean {
  if (!present && process.env[`RINGTRAIN_EXPECT_${name}`] === '1') throw new Error(`RINGTRAIN_EXPECT_${name}=1 but ${hint}`);
  return present;
}
