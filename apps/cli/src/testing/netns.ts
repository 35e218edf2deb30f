// Separate hosts for the integration tests: network namespaces on a bridge, made and removed by
// the test. They need root and iproute2 (CI has both); elsewhere `available` is false.
import { spawnSync } from 'node:child_process';

export interface Host {
  ns: string;
  /** The host side of its link (take it down to cut the host off). */
  veth: string;
  ip: string;
}

export const sh = (cmd: string): boolean => spawnSync('sh', ['-c', cmd], { stdio: 'ignore' }).status === 0;

/** `n` hosts on one bridge, addressed 10.<subnet>.<pid>.11…; names carry `prefix` and this pid. */
export function virtualHosts(prefix: string, n: number, subnet: number) {
  const tag = `${prefix}${process.pid % 100000}`;
  const hosts: Host[] = Array.from({ length: n }, (_, i) => ({ ns: `${tag}h${i + 1}`, veth: `${tag}v${i + 1}`, ip: `10.${subnet}.${process.pid % 200}.${11 + i}` }));
  const bridge = `${tag}br`;
  const available = process.platform === 'linux' && process.getuid?.() === 0 && sh('command -v ip') && sh(`ip netns add ${tag}probe && ip netns del ${tag}probe`);
  return {
    hosts,
    available,
    setUp(): void {
      const cmds = [`ip link add ${bridge} type bridge`, `ip link set ${bridge} up`];
      for (const h of hosts) {
        cmds.push(
          `ip netns add ${h.ns}`,
          `ip link add ${h.veth} type veth peer name eth0 netns ${h.ns}`,
          `ip link set ${h.veth} master ${bridge} up`,
          `ip -n ${h.ns} addr add ${h.ip}/24 dev eth0`,
          `ip -n ${h.ns} link set eth0 up`,
          `ip -n ${h.ns} link set lo up`,
        );
      }
      for (const c of cmds) if (!sh(c)) throw new Error(`network set-up failed: ${c}`);
    },
    tearDown(): void {
      for (const h of hosts) sh(`ip netns del ${h.ns}`);
      sh(`ip link del ${bridge}`);
    },
  };
}
