import type { HealthReport, StatusWarning } from '@ringtrain/protocol';

export interface HealthThresholds {
  /** A tensor's gradient norm above this is exploding (default 1e3). */
  maxGradNorm?: number;
  /** A step that moves a weight tensor by more than this fraction of its norm is too large (default 0.1). */
  maxUpdateRatio?: number;
  /** A weight tensor's gradient norm below this is vanishing (default 1e-7). */
  minGradNorm?: number;
}

/**
 * Reads rank 0's per-tensor health reports and warns, naming the tensor, when gradients explode
 * (huge norms, or steps that rewrite a large part of the weights: too high a learning rate) or
 * vanish (a layer that no longer learns: saturation, poor initialisation). A condition warns once
 * when it starts, and again only after it has cleared.
 */
export class HealthWatch {
  private readonly active = new Set<string>();
  private readonly maxGradNorm: number;
  private readonly maxUpdateRatio: number;
  private readonly minGradNorm: number;

  constructor(t: HealthThresholds = {}) {
    this.maxGradNorm = t.maxGradNorm ?? 1e3;
    this.maxUpdateRatio = t.maxUpdateRatio ?? 0.1;
    this.minGradNorm = t.minGradNorm ?? 1e-7;
  }

  check(report: HealthReport): StatusWarning[] {
    const warnings: StatusWarning[] = [];
    const now = new Set<string>();
    for (const t of report.tensors) {
      const g = t.gradNorm ?? Number.NaN; // null: NaN or ±Inf on the wire
      const u = t.updateRatio ?? Number.NaN;
      let code: string | null = null;
      let message = '';
      if (!Number.isFinite(g) || g > this.maxGradNorm) {
        code = 'WARN_GRADIENT_EXPLODING';
        message = `gradient of ${t.name} is exploding: norm ${fmt(g)} at step ${report.step} (limit ${this.maxGradNorm}); lower the learning rate or set clipGradNorm`;
      } else if (t.role === 'weight' && (!Number.isFinite(u) || u > this.maxUpdateRatio)) {
        code = 'WARN_GRADIENT_EXPLODING';
        message = `${t.name} moved by ${fmt(u)} of its norm in one step at step ${report.step} (limit ${this.maxUpdateRatio}; ~1e-3 is typical); the learning rate is too high`;
      } else if (t.role === 'weight' && g < this.minGradNorm) {
        code = 'WARN_GRADIENT_VANISHING';
        message = `gradient of ${t.name} is vanishing: norm ${fmt(g)} at step ${report.step} (limit ${this.minGradNorm}); the layer has stopped learning (saturated activations or a poor initialisation)`;
      }
      if (!code) continue;
      const key = `${code}:${t.name}`;
      now.add(key);
      if (!this.active.has(key)) warnings.push({ code, message, step: report.step, tensor: t.name });
    }
    this.active.clear();
    for (const k of now) this.active.add(k);
    return warnings;
  }
}

const fmt = (x: number): string => (Number.isFinite(x) ? x.toPrecision(3) : String(x));
