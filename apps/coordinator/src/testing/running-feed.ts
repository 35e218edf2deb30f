import type { StatusEventBody } from '@ringtrain/protocol';
import { StatusFeed, type StatusFeedOptions } from '../status-feed.js';

export const TEST_CONFIG = { model: 'MLP 4-2', positions: 1, parameters: 10, optimizer: 'sgd', lr: 0.1, batchSize: 8, epochs: 1, dataset: 'synthetic', configHash: 'abc' };

/** The feed of a run of two workers (a and b, ranks 1 and 0) that has started, and every event it emits. */
export function runningFeed(over: Partial<StatusFeedOptions> = {}): { feed: StatusFeed; events: StatusEventBody[] } {
  const feed = new StatusFeed({ runId: 'r', workers: 2, config: TEST_CONFIG, intervalMs: 60_000, ...over });
  const events: StatusEventBody[] = [];
  feed.subscribe((e) => events.push(e));
  feed.workerJoined({ workerId: 'a', host: 'h', pid: 1, address: 'ws://a' });
  feed.workerJoined({ workerId: 'b', host: 'h', pid: 2, address: 'ws://b' });
  feed.ranksAssigned(['b', 'a']);
  feed.setState('running', 1);
  feed.started(100, 0, 1000);
  return { feed, events };
}
