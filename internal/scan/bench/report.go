package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Sorted(slices.Values(v))
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func (b *bench) find(key string, round int) (result, bool) {
	for _, r := range b.results {
		if r.contender == key && r.round == round {
			return r, true
		}
	}
	return result{}, false
}

// mbps is the rate of r over the uncompressed file.
func (b *bench) mbps(r result) float64 {
	return float64(b.data.Truth.Bytes) / 1e6 / r.wall.Seconds()
}

// ratios returns c's rate divided by its bound's in the same pass, pass by
// pass.
func (b *bench) ratios(c contender) []float64 {
	var v []float64
	for _, r := range b.results {
		if r.contender != c.key {
			continue
		}
		if bound, ok := b.find(c.bound, r.round); ok {
			v = append(v, bound.wall.Seconds()/r.wall.Seconds())
		}
	}
	return v
}

func (b *bench) medianOf(key string, fn func(result) float64) float64 {
	var v []float64
	for _, r := range b.results {
		if r.contender == key {
			v = append(v, fn(r))
		}
	}
	return median(v)
}

func (b *bench) report(w io.Writer) {
	m, t, o := b.machine, b.data.Truth, b.o
	fmt.Fprintf(w, "quarantine-watch scan benchmark (make bench-scan), %s, took %s\n\n",
		b.began.UTC().Format(time.RFC3339), time.Since(b.began).Round(time.Second))
	fmt.Fprintf(w, "machine   %d CPUs (nproc), %s, %.1f GiB RAM, Linux %s\n", m.nproc, m.model, float64(m.memTotal)/(1<<30), m.kernel)
	fmt.Fprintf(w, "load      load average (1, 5, 15 min) %s at the start, %s at the end\n", m.loadStart, m.loadEnd)
	fmt.Fprintf(w, "software  %s built with %s (benchmark %s); %s; %s\n", o.bin, m.binGoVersion, m.goVersion, m.wc, m.gzip)
	if o.compare != "" {
		fmt.Fprintf(w, "compare   %s\n", o.compare)
	}
	fmt.Fprintf(w, "data      %s: %s documents, one per line (cloudtrailgen seed %d, single records), %s bytes;\n",
		b.data.Path, group(t.Documents), t.Seed, group(t.Bytes))
	fmt.Fprintf(w, "          %s malformed lines, %d findings expected (generator ground truth); gzip copy (level 6) %s bytes\n",
		group(t.Malformed), len(t.Positives), group(t.GzipBytes))
	fmt.Fprintf(w, "\nMedians of %d alternate passes; a bound (wc -l, gzip -dc) counts the best of %d runs per pass. MB/s are of\n", o.rounds, o.bestOf)
	fmt.Fprintf(w, "the uncompressed file; the ratio is to the bound's rate in the same pass; CPU is user+system, RSS the peak.\n\n")
	var tw table
	tw.addf("command\tMB/s\t× bound\ttarget\tmet\tCPU s\tpeak RSS MB\tchecked")
	for _, c := range b.contenders() {
		rate := b.medianOf(c.key, b.mbps)
		ratio, target, met := "", "", ""
		if c.bound != "" {
			r := median(b.ratios(c))
			ratio = fmt.Sprintf("%.2f × %s", r, c.bound)
			if c.target > 0 {
				target = fmt.Sprintf("≥ %.2f", c.target)
				met = "yes"
				if r < c.target {
					met = "NO"
				}
			}
		}
		checked := ""
		if c.scan {
			checked = "ok"
			for _, f := range b.failures {
				if strings.HasPrefix(f, c.label+",") {
					checked = "FAILED"
				}
			}
		}
		tw.addf("%s\t%.0f\t%s\t%s\t%s\t%.2f\t%.0f\t%s", c.label, rate, ratio, target, met,
			b.medianOf(c.key, func(r result) float64 { return r.cpu.Seconds() }),
			b.medianOf(c.key, func(r result) float64 { return float64(r.maxRSS) / (1 << 20) }), checked)
	}
	tw.print(w)
	fmt.Fprintf(w, "\nchecked: every pass's findings are the generator's %d positives and its counts are %s documents and %s malformed.\n",
		len(t.Positives), group(t.Documents), group(t.Malformed))

	fmt.Fprintf(w, "\nEvery pass (wall seconds; load: 1-minute average when the pass began):\n\n")
	tw = table{}
	head := []string{"pass", "load"}
	cs := b.contenders()
	for _, c := range cs {
		head = append(head, c.key)
	}
	tw.add(head...)
	for round := 1; round <= o.rounds; round++ {
		row := []string{fmt.Sprint(round), ""}
		for _, c := range cs {
			r, _ := b.find(c.key, round)
			row[1] = r.load1
			row = append(row, fmt.Sprintf("%.3f", r.wall.Seconds()))
		}
		tw.add(row...)
	}
	tw.print(w)
	for _, f := range b.failures {
		fmt.Fprintf(w, "FAILED  %s\n", f)
	}
}

// group formats n with thousands separators.
func group(n int64) string {
	if n < 0 {
		return "-" + group(-n)
	}
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// table prints rows, the first column left-aligned and the others
// right-aligned.
type table struct{ rows [][]string }

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) addf(format string, args ...any) {
	t.add(strings.Split(fmt.Sprintf(format, args...), "\t")...)
}

func (t *table) print(w io.Writer) {
	var width []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i > 0 {
				b.WriteString("  ")
			}
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString(pad + c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}
