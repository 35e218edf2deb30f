import { describe, expect, it } from 'vitest';
import { childEnv, isLoopback, readSecrets, withoutSecretArgs } from './secrets.js';

describe('secrets', () => {
  it('strips every secret flag from a command line, in both spellings, and nothing else', () => {
    expect(withoutSecretArgs(['worker', '--token', 'a', '--coordinator', 'ws://x', '--status-token=b', '--admin-token', 'c', '--token-file', '/f', '--epochs', '2'])).toEqual([
      'worker',
      '--coordinator',
      'ws://x',
      '--token-file',
      '/f',
      '--epochs',
      '2',
    ]);
  });

  it('a child gets only the job token', () => {
    const env = childEnv({ PATH: '/bin', RINGTRAIN_TOKEN: 'old', RINGTRAIN_STATUS_TOKEN: 's', RINGTRAIN_ADMIN_TOKEN_FILE: '/a', RINGTRAIN_TOKEN_FILE: '/t' }, { token: 'job', adminToken: 'adm' });
    expect(env).toEqual({ PATH: '/bin', RINGTRAIN_TOKEN: 'job' });
  });

  it('the flag wins over the environment, and warns; an empty variable is no token', () => {
    const warnings: string[] = [];
    const s = readSecrets({ token: 'flag' }, ['token', 'statusToken', 'adminToken'], (m) => warnings.push(m), { RINGTRAIN_TOKEN: 'env', RINGTRAIN_STATUS_TOKEN: 'st', RINGTRAIN_ADMIN_TOKEN: '' });
    expect(s).toEqual({ token: 'flag', statusToken: 'st' });
    expect(warnings).toEqual([expect.stringMatching(/--token on the command line is visible/)]);
  });

  it('knows loopback addresses', () => {
    expect(['127.0.0.1', '127.3.2.1', 'localhost', '::1'].every(isLoopback)).toBe(true);
    expect(['0.0.0.0', '10.0.0.1', '::', '128.0.0.1'].some(isLoopback)).toBe(false);
  });
});
