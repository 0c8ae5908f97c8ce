// Writes a horizontal bar chart (SVG, no dependencies) of median req/s: one
// block per scenario, one labelled bar per contender, the value at its end.
// Horizontal bars keep every label readable however many scenarios there are.
import { writeFileSync } from 'node:fs';

const COLORS = ['#9e9e9e', '#5f5f5f', '#1f77b4', '#17becf', '#ff7f0e', '#d62728', '#2ca02c', '#8c564b', '#9467bd'];
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * groups: [{ label, bars: [{ contender, value }] }]; contenders: names in colour order.
 */
export function writeChart(file, { title, groups, contenders }) {
  const labelW = 300,
    plotW = 460,
    right = 70,
    barH = 14,
    barGap = 3,
    headerH = 20,
    groupGap = 12,
    top = 44;
  const width = labelW + plotW + right;
  const max = Math.max(1, ...groups.flatMap((g) => g.bars.map((b) => b.value)));
  const step = niceStep(max / 5);
  const xMax = Math.ceil(max / step) * step;
  const x = (v) => labelW + (v / xMax) * plotW;
  const color = (name) => COLORS[Math.max(0, contenders.indexOf(name)) % COLORS.length];
  const body = [];
  let y = top;
  for (const group of groups) {
    body.push(`<text x="8" y="${y + 13}" font-weight="bold">${esc(group.label)}</text>`);
    y += headerH;
    for (const bar of group.bars) {
      const value = Number.isFinite(bar.value) ? bar.value : 0;
      body.push(`<text x="${labelW - 8}" y="${y + barH - 3}" text-anchor="end">${esc(bar.contender)}</text>`);
      body.push(
        `<rect x="${labelW}" y="${y}" width="${Math.max(1, x(value) - labelW)}" height="${barH}" fill="${color(bar.contender)}"><title>${esc(`${group.label} / ${bar.contender}: ${Math.round(value)} req/s`)}</title></rect>`,
      );
      body.push(`<text x="${x(value) + 4}" y="${y + barH - 3}">${Math.round(value).toLocaleString('en-US')}</text>`);
      y += barH + barGap;
    }
    y += groupGap;
  }
  const height = y + 24;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`,
  ];
  for (let v = 0; v <= xMax; v += step) {
    out.push(`<line x1="${x(v)}" x2="${x(v)}" y1="${top - 6}" y2="${y - groupGap}" stroke="#e6e6e6"/>`);
    out.push(
      `<text x="${x(v)}" y="${top - 10}" text-anchor="middle" fill="#555">${v >= 1000 ? `${v / 1000}k` : v}</text>`,
    );
  }
  out.push(...body);
  out.push(
    `<text x="${labelW + plotW / 2}" y="${height - 8}" text-anchor="middle" fill="#555">requests per second (median; longer is better)</text>`,
  );
  out.push('</svg>');
  writeFileSync(file, out.join('\n') + '\n');
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
}
