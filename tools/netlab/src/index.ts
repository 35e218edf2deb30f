// Hosts for tests and benchmarks: network namespaces on a bridge, each link's rate shaped with
// `tc … tbf` (and its delay with netem, where the kernel has it). They need root and iproute2;
// elsewhere `available` is false. Names carry a prefix and the owner's pid, so that a run that was
// killed before it could clean up is recognised (its pid is gone) and its leftovers removed.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';

export interface Host {
  ns: string;
  /** The host side of its link (take it down to cut the host off; its egress is traffic to the host). */
  veth: string;
  ip: string;
}

/** A link profile: every host's link in both directions. */
export interface LinkProfile {
  name: string;
  /** Rate in Mbit/s; none: unshaped. */
  mbit?: number;
  /** One-way delay in ms (netem; skipped, and said, where the kernel lacks it). */
  delayMs?: number;
}

/** The profiles of the network benchmark. */
export const PROFILES: readonly LinkProfile[] = [
  { name: 'unshaped' },
  { name: '10 Gbit/s', mbit: 10_000 },
  { name: '1 Gbit/s', mbit: 1000 },
  { name: '100 Mbit/s', mbit: 100 },
  { name: 'WAN 50 Mbit/s', mbit: 50, delayMs: 10 },
];

export const sh = (cmd: string): boolean => spawnSync('sh', ['-c', cmd], { stdio: 'ignore' }).status === 0;
const out = (cmd: string): string => spawnSync('sh', ['-c', cmd], { encoding: 'utf8' }).stdout ?? '';

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** Whether namespaces can be made here (root, iproute2, a kernel that allows it). */
export function canMakeHosts(): boolean {
  return process.platform === 'linux' && process.getuid?.() === 0 && sh('command -v ip') && sh(`ip netns add rtprobe${process.pid} && ip netns del rtprobe${process.pid}`);
}

/** Whether this kernel has netem (delay); this machine's does not. */
export function hasNetem(): boolean {
  const probe = `rtnetem${process.pid}`;
  const ok = sh(`ip link add ${probe} type dummy && tc qdisc add dev ${probe} root netem delay 1ms`);
  sh(`ip link del ${probe}`);
  return ok;
}

/** Removes namespaces and bridges of `prefix` whose owner pid has exited (a run killed mid-way). */
export function removeStale(prefix: string): void {
  const owner = new RegExp(`^${prefix}(\\d+)(?:h\\d+|br)$`);
  for (const ns of out('ip netns list').split('\n').map((l) => l.split(' ')[0])) {
    const m = owner.exec(ns);
    if (m && !alive(Number(m[1]))) sh(`ip netns del ${ns}`);
  }
  for (const line of out('ip -o link show type bridge').split('\n')) {
    const name = /^\d+: ([^:@]+)/.exec(line)?.[1];
    const m = name ? owner.exec(name) : null;
    if (m && !alive(Number(m[1]))) sh(`ip link del ${name}`);
  }
}

/** `n` hosts on one bridge, addressed 10.<subnet>.<pid % 200>.11…; names carry `prefix` and this pid. */
export function virtualHosts(prefix: string, n: number, subnet: number) {
  const tag = `${prefix}${process.pid}`;
  const hosts: Host[] = Array.from({ length: n }, (_, i) => ({ ns: `${tag}h${i + 1}`, veth: `${tag}v${i + 1}`, ip: `10.${subnet}.${process.pid % 200}.${11 + i}` }));
  const bridge = `${tag}br`;
  if (tag.length + 3 > 15) throw new Error(`prefix "${prefix}" makes interface names longer than 15 characters`);
  let cleanup: (() => void) | null = null;
  const net = {
    hosts,
    available: canMakeHosts(),
    setUp(): void {
      removeStale(prefix);
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
      // Interrupted (Ctrl-C, a test runner's kill), the namespaces go too.
      cleanup = () => net.tearDown();
      process.once('exit', cleanup);
      for (const signal of ['SIGINT', 'SIGTERM'] as const) {
        process.once(signal, () => {
          net.tearDown();
          process.exit(130);
        });
      }
      for (const c of cmds) {
        if (!sh(c)) {
          net.tearDown();
          throw new Error(`network set-up failed: ${c}`);
        }
      }
    },
    /**
     * Shapes every host's link, both ways, to the profile (replacing the last one). tbf's bucket
     * holds 10 ms at the rate (at least 64 KiB), so that bursts of one segment pass at line rate.
     * Returns what could not be applied (a delay without netem), or null.
     */
    shape(profile: LinkProfile): string | null {
      for (const h of hosts) {
        sh(`tc qdisc del dev ${h.veth} root`);
        sh(`ip netns exec ${h.ns} tc qdisc del dev eth0 root`);
      }
      if (!profile.mbit) return null;
      const burst = Math.max(64 * 1024, Math.round((profile.mbit * 1e6) / 8 / 100));
      const tbf = `tbf rate ${profile.mbit}mbit burst ${burst} latency 100ms`;
      const netem = profile.delayMs && hasNetem();
      for (const h of hosts) {
        if (!sh(`tc qdisc add dev ${h.veth} root ${tbf}`)) throw new Error(`tc on ${h.veth} failed`);
        const inside = netem ? `netem delay ${profile.delayMs}ms rate ${profile.mbit}mbit` : tbf;
        if (!sh(`ip netns exec ${h.ns} tc qdisc add dev eth0 root ${inside}`)) throw new Error(`tc in ${h.ns} failed`);
      }
      return profile.delayMs && !netem ? `no netem in this kernel: ${profile.name} runs without its ${profile.delayMs} ms delay` : null;
    },
    /** Starts a command inside a host. */
    run(host: Host, command: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
      return spawn('ip', ['netns', 'exec', host.ns, command, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    },
    tearDown(): void {
      for (const h of hosts) sh(`ip netns del ${h.ns}`);
      sh(`ip link del ${bridge}`);
      if (cleanup) process.removeListener('exit', cleanup);
      cleanup = null;
    },
  };
  return net;
}

export type VirtualHosts = ReturnType<typeof virtualHosts>;
