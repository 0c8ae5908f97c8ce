// Writes a grouped bar chart (SVG, no dependencies) of median req/s per scenario per contender.
import { writeFileSync } from 'node:fs';

const COLORS = ['#9e9e9e', '#1f77b4', '#17becf', '#ff7f0e', '#d62728', '#2ca02c', '#8c564b', '#9467bd'];
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * groups: [{ label, bars: [{ contender, value }] }]; contenders: names in legend order.
 */
export function writeChart(file, { title, groups, contenders }) {
  const barW = 16, gap = 4, groupGap = 28, left = 70, top = 50, plotH = 300, bottom = 70;
  const groupWidths = groups.map((g) => g.bars.length * (barW + gap) - gap);
  const plotW = groupWidths.reduce((a, b) => a + b, 0) + groupGap * (groups.length + 1);
  const legendH = Math.ceil(contenders.length / 3) * 18 + 10;
  const width = left + plotW + 20, height = top + plotH + bottom + legendH;
  const max = Math.max(1, ...groups.flatMap((g) => g.bars.map((b) => b.value)));
  const step = niceStep(max / 5);
  const yMax = Math.ceil(max / step) * step;
  const y = (v) => top + plotH - (v / yMax) * plotH;
  const color = (name) => COLORS[contenders.indexOf(name) % COLORS.length];
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="${width / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`);
  for (let v = 0; v <= yMax; v += step) {
    out.push(`<line x1="${left}" x2="${left + plotW}" y1="${y(v)}" y2="${y(v)}" stroke="#e0e0e0"/>`);
    out.push(`<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end">${v >= 1000 ? `${v / 1000}k` : v}</text>`);
  }
  out.push(`<text transform="translate(16 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">requests per second (median)</text>`);
  let x = left + groupGap;
  groups.forEach((group, i) => {
    for (const bar of group.bars) {
      const h = top + plotH - y(bar.value);
      out.push(`<rect x="${x}" y="${y(bar.value)}" width="${barW}" height="${h}" fill="${color(bar.contender)}"><title>${esc(`${group.label} / ${bar.contender}: ${Math.round(bar.value)} req/s`)}</title></rect>`);
      x += barW + gap;
    }
    const center = x - gap - groupWidths[i] / 2;
    group.label.split('\n').forEach((line, k) => out.push(`<text x="${center}" y="${top + plotH + 16 + k * 13}" text-anchor="middle">${esc(line)}</text>`));
    x += groupGap - gap;
  });
  out.push(`<line x1="${left}" x2="${left + plotW}" y1="${top + plotH}" y2="${top + plotH}" stroke="#333"/>`);
  contenders.forEach((name, i) => {
    const lx = left + (i % 3) * Math.max(200, plotW / 3), ly = top + plotH + bottom + Math.floor(i / 3) * 18;
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${color(name)}"/><text x="${lx + 18}" y="${ly}">${esc(name)}</text>`);
  });
  out.push('</svg>');
  writeFileSync(file, out.join('\n') + '\n');
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
}
