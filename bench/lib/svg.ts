/**
 * A hand-written SVG of latency distributions: one panel per (scenario, N), one curve per
 * target. No dependencies.
 */
import { bucketUpperUs, HIST_MIN_US } from './common';

export interface LatencySeries {
  label: string;
  color: string;
  /** Counts per log bucket (LatencySummary.histogram). */
  histogram: number[];
}

export interface LatencyPanel {
  title: string;
  series: LatencySeries[];
}

const PANEL_W = 330;
const PANEL_H = 230;
const M = { left: 48, right: 30, top: 26, bottom: 36 };
const LEGEND_H = 30;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function fmtMs(ms: number): string {
  if (ms >= 1000) return `${ms / 1000}s`;
  if (ms >= 1) return `${ms}ms`;
  return `${ms * 1000}µs`;
}

/** x position of percentile p: log10(1 / (1 - p)), so 90%, 99%, 99.9% are equally spaced. */
function nines(p: number, cap: number): number {
  return p >= 1 ? cap : Math.min(cap, Math.log10(1 / (1 - p)));
}

/**
 * Latency by percentile (HdrHistogram style): x = percentile (0, 90, 99, 99.9 …, equally
 * spaced), y = latency on a log axis; one staircase per target, one panel per scenario,
 * `columns` panels per row; the y range is shared by all panels.
 */
export function percentileSvg(title: string, panels: LatencyPanel[], columns: number): string {
  const rows = Math.max(1, Math.ceil(panels.length / columns));
  const width = columns * PANEL_W;
  const height = 28 + LEGEND_H + rows * PANEL_H;

  let lo = Infinity;
  let hi = -Infinity;
  let maxTotal = 10;
  for (const p of panels) {
    for (const s of p.series) {
      let total = 0;
      s.histogram.forEach((c, i) => {
        total += c;
        if (c === 0) return;
        lo = Math.min(lo, i === 0 ? HIST_MIN_US : bucketUpperUs(i - 1));
        hi = Math.max(hi, bucketUpperUs(i));
      });
      maxTotal = Math.max(maxTotal, total);
    }
  }
  if (!Number.isFinite(lo)) {
    lo = 100;
    hi = 100_000;
  }
  // y: whole decades (ms); x: as many nines as the largest sample count resolves (≤ 5).
  const d0 = Math.floor(Math.log10(lo / 1000));
  const d1 = Math.max(d0 + 1, Math.ceil(Math.log10(hi / 1000)));
  const xCap = Math.max(1, Math.min(5, Math.ceil(Math.log10(maxTotal))));

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
      `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`,
  );

  const legend = new Map<string, string>();
  for (const p of panels)
    for (const s of p.series) if (!legend.has(s.label)) legend.set(s.label, s.color);
  let lx = 12;
  for (const [label, color] of legend) {
    out.push(
      `<line x1="${lx}" y1="38" x2="${lx + 22}" y2="38" stroke="${color}" stroke-width="2.5"/>`,
      `<text x="${lx + 27}" y="42">${esc(label)}</text>`,
    );
    lx += 40 + label.length * 6.5;
  }

  panels.forEach((panel, idx) => {
    const ox = (idx % columns) * PANEL_W;
    const oy = 28 + LEGEND_H + Math.floor(idx / columns) * PANEL_H;
    const pw = PANEL_W - M.left - M.right;
    const ph = PANEL_H - M.top - M.bottom;
    const x = (p: number): number => ox + M.left + (nines(p, xCap) / xCap) * pw;
    const y = (ms: number): number => oy + M.top + (1 - (Math.log10(ms) - d0) / (d1 - d0)) * ph;

    out.push(
      `<text x="${ox + M.left + pw / 2}" y="${oy + 16}" text-anchor="middle" font-weight="bold">${esc(panel.title)}</text>`,
      `<rect x="${ox + M.left}" y="${oy + M.top}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`,
    );
    for (let d = d0; d <= d1; d++) {
      const gy = y(Math.pow(10, d)).toFixed(1);
      out.push(
        `<line x1="${ox + M.left}" y1="${gy}" x2="${ox + M.left + pw}" y2="${gy}" stroke="#e5e5e5"/>`,
        `<text x="${ox + M.left - 4}" y="${Number(gy) + 4}" text-anchor="end">${fmtMs(Math.pow(10, d))}</text>`,
      );
    }
    for (let k = 0; k <= xCap; k++) {
      const gx = (ox + M.left + (k / xCap) * pw).toFixed(1);
      const label = k === 0 ? '0%' : `${(100 - Math.pow(10, 2 - k)).toFixed(Math.max(0, k - 2))}%`;
      out.push(
        `<line x1="${gx}" y1="${oy + M.top}" x2="${gx}" y2="${oy + M.top + ph}" stroke="#eee"/>`,
        `<text x="${gx}" y="${oy + M.top + ph + 14}" text-anchor="middle">${label}</text>`,
      );
    }
    out.push(
      `<text x="${ox + M.left + pw / 2}" y="${oy + PANEL_H - 6}" text-anchor="middle" fill="#555">percentile · latency (log)</text>`,
    );
    for (const s of panel.series) {
      const total = s.histogram.reduce((a, b) => a + b, 0);
      if (total === 0) continue;
      let cum = 0;
      const pts: string[] = [];
      s.histogram.forEach((c, i) => {
        if (c === 0) return;
        const level = y(bucketUpperUs(i) / 1000).toFixed(1);
        pts.push(`${x(cum / total).toFixed(1)},${level}`);
        cum += c;
        pts.push(`${x(cum / total).toFixed(1)},${level}`);
      });
      out.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.join(' ')}"/>`,
      );
    }
  });

  out.push('</svg>');
  return out.join('\n') + '\n';
}
