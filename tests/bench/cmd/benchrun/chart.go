package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

var palette = []string{"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f"}

// barChart draws grouped bars on a logarithmic axis as a standalone SVG:
// one group per system, one bar per series. NaN values are left out.
func barChart(title, unit string, groups, series []string, values [][]float64) string {
	const (
		w, h                   = 860, 420
		left, right, top, foot = 70, 20, 50, 90
	)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, row := range values {
		for _, v := range row {
			if v > 0 && !math.IsNaN(v) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" text-anchor="middle">%s</text>`+"\n", w/2, html.EscapeString(title))
	if math.IsInf(lo, 1) {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">no data</text></svg>`+"\n", w/2, h/2)
		return b.String()
	}
	lo10, hi10 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if hi10 == lo10 {
		hi10++
	}
	plotH := float64(h - top - foot)
	y := func(v float64) float64 {
		return float64(top) + plotH*(1-(math.Log10(v)-lo10)/(hi10-lo10))
	}
	for e := lo10; e <= hi10; e++ {
		yy := y(math.Pow(10, e))
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, w-right, yy, yy)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, yy+4, num(math.Pow(10, e)))
	}
	fmt.Fprintf(&b, `<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">%s (log scale)</text>`+"\n",
		top+int(plotH/2), top+int(plotH/2), html.EscapeString(unit))
	groupW := float64(w-left-right) / float64(max(len(groups), 1))
	barW := groupW * 0.8 / float64(max(len(series), 1))
	base := float64(top) + plotH
	for g, name := range groups {
		x0 := float64(left) + groupW*float64(g) + groupW*0.1
		for s := range series {
			v := values[g][s]
			if math.IsNaN(v) || v <= 0 {
				continue
			}
			yy := y(v)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s %s</title></rect>`+"\n",
				x0+barW*float64(s), yy, barW-1, base-yy, palette[s%len(palette)],
				html.EscapeString(name), html.EscapeString(series[s]), num(v), html.EscapeString(unit))
		}
		cx := x0 + groupW*0.4
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" transform="rotate(-30 %.1f %.1f)">%s</text>`+"\n",
			cx, base+16, cx, base+16, html.EscapeString(name))
	}
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#333"/>`+"\n", left, w-right, base, base)
	for s, name := range series {
		x := left + 10 + s*140
		fmt.Fprintf(&b, `<rect x="%d" y="34" width="12" height="12" fill="%s"/><text x="%d" y="45">%s</text>`+"\n",
			x, palette[s%len(palette)], x+16, html.EscapeString(name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// col is one series of a chart: a metric of a workload, times factor.
type col struct {
	work, metric, name string
	factor             float64
}

// chartData collects one value per series for every peer measured in any.
func (r *report) chartData(cols []col) (groups, series []string, values [][]float64) {
	for _, c := range cols {
		series = append(series, c.name)
	}
	for _, p := range r.Peers {
		row := make([]float64, len(cols))
		measured := false
		for i, c := range cols {
			row[i] = math.NaN()
			if cl := r.cell(c.work, p.Name); cl != nil && cl.Status == "" && cl.Stats[c.metric] != nil {
				row[i] = cl.Stats[c.metric].Median * c.factor
				measured = true
			}
		}
		if measured {
			groups = append(groups, p.Label)
			values = append(values, row)
		}
	}
	return groups, series, values
}

func (r *report) latencyChart() string {
	g, s, v := r.chartData([]col{
		{"rpc-64-1", "p50_us", "p50", 1}, {"rpc-64-1", "p90_us", "p90", 1}, {"rpc-64-1", "p99_us", "p99", 1},
	})
	return barChart("RPC round trip, 64 B, 1 client: latency percentiles", "µs", g, s, v)
}

func (r *report) throughputChart() string {
	g, s, v := r.chartData([]col{
		{"events-64", "gb_s", "events 64 B", 1}, {"events-64k", "gb_s", "events 64 KiB", 1},
		// RPC: request and reply bytes, one client.
		{"rpc-64-1", "calls_s", "RPC 64 B", 2 * 64 / 1e9}, {"rpc-64k-1", "calls_s", "RPC 64 KiB", 2 * 65536 / 1e9},
	})
	return barChart("Payload throughput per payload size (events one way; RPC request + reply, 1 client)", "GB/s", g, s, v)
}
