package integration

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// The arithmetic of the soak (soak_test.go, behind the soak build tag): the
// samples of each instance's resources, the fault windows, least-squares
// slopes over each process's steady part, the share of transactions aborted
// outside the windows, and the table. It is here, untagged, so that
// TestSoakAnalysis runs in make test: a soak whose verdict cannot fail
// would prove nothing.

// soakInterval is how often the soak samples every instance.
const soakInterval = 10 * time.Second

// soakSample is one instance's process as the sampler saw it. A quantity
// the sampler could not read is NaN.
type soakSample struct {
	at   time.Duration // since the soak began
	name string        // the instance
	pid  int
	// rss is the resident set (process_resident_memory_bytes, or VmRSS
	// from /proc when the scrape failed), hwm its peak (VmHWM, /proc
	// only), heap the heap in use (go_memstats_heap_inuse_bytes), fds the
	// open files (process_open_fds, or /proc/<pid>/fd).
	rss, hwm, heap, goroutines, fds float64
	// The process's counters since it started: transactions committed
	// and aborted, source records in committed transactions.
	committed, aborted, records float64
}

// soakWindow is a span of the soak during which a fault, or the group's
// forming at the start, is expected to disturb the service: from the
// fault's first action until the group has recovered (see soak_test.go)
// and soakSettle more.
type soakWindow struct {
	what     string
	from, to time.Duration
}

// overlaps reports whether [from, to] meets any window.
func overlaps(ws []soakWindow, from, to time.Duration) bool {
	for _, w := range ws {
		if from <= w.to && to >= w.from {
			return true
		}
	}
	return false
}

// soakMetric is a sampled quantity and the largest growth per hour the
// verdict accepts in its steady part. The reasons for each limit are in
// docs/reliability.md ("The soak").
type soakMetric struct {
	name    string
	unit    string  // printed after the value
	scale   float64 // the value is divided by it for printing
	maxRate float64 // per hour, in the value's own unit
	get     func(soakSample) float64
}

var soakMetrics = []soakMetric{
	{"rss", "MiB", 1 << 20, 16 << 20, func(s soakSample) float64 { return s.rss }},
	{"goroutine", "", 1, 30, func(s soakSample) float64 { return s.goroutines }},
	{"heap", "MiB", 1 << 20, 16 << 20, func(s soakSample) float64 { return s.heap }},
	{"fds", "", 1, 12, func(s soakSample) float64 { return s.fds }},
}

func (m soakMetric) format(v float64) string {
	if m.unit == "" {
		return fmt.Sprintf("%+.1f", v/m.scale)
	}
	return fmt.Sprintf("%+.1f%s", v/m.scale, m.unit)
}

// soakSlope is the fit over one process's steady part, and the process's
// level before the first fault beside its level in the steady part.
type soakSlope struct {
	name     string
	pid      int
	from, to time.Duration // its first and last steady sample
	n        int
	perHour  []float64 // by soakMetrics; NaN with fewer than 3 samples
	stdErr   []float64 // the standard error of each slope
	// before and after are the medians of each metric before the first
	// fault (NaN if the process was not steady then) and in the steady
	// part.
	before, after []float64
}

// leastSquares returns the slope of the least-squares line through (xs,
// ys), skipping NaN values, its standard error, and how many points it
// used.
func leastSquares(xs, ys []float64) (slope, stdErr float64, n int) {
	var sx, sy float64
	for i := range xs {
		if !math.IsNaN(ys[i]) {
			n++
			sx += xs[i]
			sy += ys[i]
		}
	}
	if n < 3 {
		return math.NaN(), math.NaN(), n
	}
	mx, my := sx/float64(n), sy/float64(n)
	var sxy, sxx float64
	for i := range xs {
		if !math.IsNaN(ys[i]) {
			sxy += (xs[i] - mx) * (ys[i] - my)
			sxx += (xs[i] - mx) * (xs[i] - mx)
		}
	}
	if sxx == 0 {
		return math.NaN(), math.NaN(), n
	}
	slope = sxy / sxx
	var rss float64
	for i := range xs {
		if !math.IsNaN(ys[i]) {
			r := ys[i] - my - slope*(xs[i]-mx)
			rss += r * r
		}
	}
	return slope, math.Sqrt(rss / float64(n-2) / sxx), n
}

// median returns the median of the values that are not NaN.
func median(vs []float64) float64 {
	vs = slices.DeleteFunc(slices.Clone(vs), math.IsNaN)
	if len(vs) == 0 {
		return math.NaN()
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

// steadySlopes fits a line through each metric of each process over its
// steady part: its samples after the last window (every fault over) and
// at least warm after its first sample. A leak shows there as growth under
// a steady load; a process that merely kept memory it took during a fault
// (the Go runtime returns it slowly) does not. Processes whose steady part
// spans less than minSpan are left out: a few minutes of samples say
// nothing of growth per hour.
func steadySlopes(samples []soakSample, windows []soakWindow, warm, minSpan time.Duration) []soakSlope {
	type key struct {
		name string
		pid  int
	}
	var quiet, firstFault time.Duration
	firstFault = math.MaxInt64
	for _, w := range windows {
		quiet = max(quiet, w.to)
		if w.what != soakStartup {
			firstFault = min(firstFault, w.from)
		}
	}
	byProc := map[key][]soakSample{}
	var order []key
	for _, s := range samples {
		k := key{s.name, s.pid}
		if _, ok := byProc[k]; !ok {
			order = append(order, k)
		}
		byProc[k] = append(byProc[k], s)
	}
	var out []soakSlope
	for _, k := range order {
		ss := byProc[k]
		first := ss[0].at
		var steady, before []soakSample
		for _, s := range ss {
			switch {
			case s.at < first+warm:
			case s.at > quiet:
				steady = append(steady, s)
			case s.at < firstFault && !overlaps(windows, s.at, s.at):
				before = append(before, s)
			}
		}
		if len(steady) < 3 || steady[len(steady)-1].at-steady[0].at < minSpan {
			continue
		}
		sl := soakSlope{name: k.name, pid: k.pid, from: steady[0].at, to: steady[len(steady)-1].at, n: len(steady)}
		xs := make([]float64, len(steady))
		for i, s := range steady {
			xs[i] = s.at.Hours()
		}
		values := func(ss []soakSample, m soakMetric) []float64 {
			ys := make([]float64, len(ss))
			for i, s := range ss {
				ys[i] = m.get(s)
			}
			return ys
		}
		for _, m := range soakMetrics {
			ys := values(steady, m)
			slope, se, _ := leastSquares(xs, ys)
			sl.perHour = append(sl.perHour, slope)
			sl.stdErr = append(sl.stdErr, se)
			sl.after = append(sl.after, median(ys))
			sl.before = append(sl.before, median(values(before, m)))
		}
		out = append(out, sl)
	}
	return out
}

// soakDelta is what one process did between two of its samples.
type soakDelta struct {
	name                        string
	from, to                    time.Duration
	committed, aborted, records float64
}

// soakDeltas turns each process's counters into what it did between two
// samples. A process's first sample counts from zero (its counters
// started with it) over the interval before it; a sample whose scrape
// failed is skipped, the next one counting from the last good one.
// Transactions a process ended after its last sample and before it was
// killed are not seen.
func soakDeltas(samples []soakSample) []soakDelta {
	type key struct {
		name string
		pid  int
	}
	last := map[key]soakSample{}
	var out []soakDelta
	for _, s := range samples {
		if math.IsNaN(s.committed) || math.IsNaN(s.aborted) || math.IsNaN(s.records) {
			continue
		}
		k := key{s.name, s.pid}
		prev, ok := last[k]
		if !ok {
			prev = soakSample{at: s.at - soakInterval}
		}
		out = append(out, soakDelta{name: s.name, from: prev.at, to: s.at,
			committed: s.committed - prev.committed, aborted: s.aborted - prev.aborted, records: s.records - prev.records})
		last[k] = s
	}
	return out
}

// abortsOutside sums the transactions ended in intervals that meet no
// window, and how many of them were aborted.
func abortsOutside(deltas []soakDelta, windows []soakWindow) (aborted, ended float64) {
	for _, d := range deltas {
		if !overlaps(windows, d.from, d.to) {
			aborted += d.aborted
			ended += d.aborted + d.committed
		}
	}
	return aborted, ended
}

// soakLimits are what the verdict holds the soak to.
type soakLimits struct {
	rssPeak    float64 // bytes: the pod's memory limit
	abortRatio float64 // aborted transactions outside the windows, of all ended there
}

// soakVerdict returns why the soak fails, if it does.
func soakVerdict(slopes []soakSlope, aborted, ended, rssPeak float64, lim soakLimits) []string {
	var why []string
	if len(slopes) == 0 {
		why = append(why, "no process had a steady part long enough to fit a slope")
	}
	for _, sl := range slopes {
		for i, m := range soakMetrics {
			if r := sl.perHour[i]; math.IsNaN(r) {
				why = append(why, fmt.Sprintf("instance %s (pid %d): no %s samples in its steady part", sl.name, sl.pid, m.name))
			} else if r > m.maxRate {
				why = append(why, fmt.Sprintf("instance %s (pid %d): %s grows %s/h over its steady part, more than %s/h",
					sl.name, sl.pid, m.name, m.format(r), m.format(m.maxRate)))
			}
		}
	}
	if ended == 0 {
		why = append(why, "no transaction ended outside the fault windows")
	} else if aborted/ended > lim.abortRatio {
		why = append(why, fmt.Sprintf("%.0f of %.0f transactions aborted outside the fault windows (%.1f%%), more than %.0f%%",
			aborted, ended, 100*aborted/ended, 100*lim.abortRatio))
	}
	if rssPeak > lim.rssPeak {
		why = append(why, fmt.Sprintf("peak RSS %.1f MiB over the pod's limit of %.0f MiB", rssPeak/(1<<20), lim.rssPeak/(1<<20)))
	}
	return why
}

// worstSlopes returns, per metric, the largest slope of any process.
func worstSlopes(slopes []soakSlope) []float64 {
	worst := make([]float64, len(soakMetrics))
	for i := range worst {
		worst[i] = math.Inf(-1)
		for _, sl := range slopes {
			if !math.IsNaN(sl.perHour[i]) {
				worst[i] = max(worst[i], sl.perHour[i])
			}
		}
	}
	return worst
}

// soakPoint is how many records the source writer had written by a time.
type soakPoint struct {
	at      time.Duration
	written int
}

// soakTable prints one row per period: the records the source writer wrote
// per second (aborted ones included), the committed source records per
// second of every instance together, each instance's largest RSS,
// goroutines, heap in use and open files in the period (a/b/c; "-" when
// it did not run), the transactions aborted of those ended, and the
// faults that began in the period.
func soakTable(samples []soakSample, deltas []soakDelta, written []soakPoint, windows []soakWindow, names []string, period, duration time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-11s %7s %7s  %-17s %-14s %-14s %-11s %-12s %s\n", "minutes", "src/s", "rec/s",
		"rss MiB "+strings.Join(names, "/"), "goroutines", "heap MiB", "fds", "aborted/txns", "faults")
	// The last row runs to duration, which may be a little past the
	// soak's planned end when the last samples were taken after it.
	for from := time.Duration(0); from < duration-period/2 || from == 0; from += period {
		to := from + period
		if to > duration-period/2 {
			to = duration
		}
		in := func(at time.Duration) bool { return at > from && at <= to || from == 0 && at == 0 }
		var records, aborted, ended float64
		for _, d := range deltas {
			if in(d.to) {
				records += d.records
				aborted += d.aborted
				ended += d.aborted + d.committed
			}
		}
		cell := func(get func(soakSample) float64, scale float64) string {
			var parts []string
			for _, n := range names {
				v := math.Inf(-1)
				for _, s := range samples {
					if s.name == n && in(s.at) && !math.IsNaN(get(s)) {
						v = max(v, get(s))
					}
				}
				if math.IsInf(v, -1) {
					parts = append(parts, "-")
				} else {
					parts = append(parts, fmt.Sprintf("%.0f", v/scale))
				}
			}
			return strings.Join(parts, "/")
		}
		src := "-"
		if n := len(written); n > 0 {
			var before, by int
			for _, w := range written {
				if w.at <= from {
					before = w.written
				}
				if w.at <= to {
					by = w.written
				}
			}
			src = fmt.Sprintf("%.1f", float64(by-before)/(to-from).Seconds())
		}
		var faults []string
		for _, w := range windows {
			if w.from >= from && w.from < to && w.what != soakStartup {
				faults = append(faults, w.what)
			}
		}
		fmt.Fprintf(&b, "%05.1f-%05.1f %7s %7.1f  %-17s %-14s %-14s %-11s %-12s %s\n",
			from.Minutes(), to.Minutes(), src, records/(to-from).Seconds(),
			cell(func(s soakSample) float64 { return s.rss }, 1<<20),
			cell(func(s soakSample) float64 { return s.goroutines }, 1),
			cell(func(s soakSample) float64 { return s.heap }, 1<<20),
			cell(func(s soakSample) float64 { return s.fds }, 1),
			fmt.Sprintf("%.0f/%.0f", aborted, ended), strings.Join(faults, "; "))
	}
	return b.String()
}

// soakStartup names the window of the group's forming at the start.
const soakStartup = "start-up"

// TestSoakAnalysis checks the soak's verdict on made-up samples: a flat
// process passes though a fault window holds a spike; a leak of each
// quantity, and aborts outside the windows, fail it; a process's
// counters starting again from zero after a restart are not a negative
// delta.
func TestSoakAnalysis(t *testing.T) {
	const minutes = 30
	fault := soakWindow{what: "kill b", from: 10 * time.Minute, to: 12 * time.Minute}
	windows := []soakWindow{{what: soakStartup, from: 0, to: 3 * time.Minute}, fault}
	lim := soakLimits{rssPeak: podMemoryLimit, abortRatio: 0.05}
	// flat makes samples of two instances every 10 s; b restarts at
	// minute 10 with a new pid. leak adds growth per hour to one metric.
	flat := func(leak string, rate float64, abortsOutside float64) []soakSample {
		rng := rand.New(rand.NewPCG(1, 2))
		var ss []soakSample
		var count [2][2]float64 // per instance: committed, aborted since its process started
		for at := soakInterval; at <= minutes*time.Minute; at += soakInterval {
			for i, name := range []string{"a", "b"} {
				pid := 100 + i
				if name == "b" && at >= 10*time.Minute {
					if pid = 200; at == 10*time.Minute {
						count[i] = [2]float64{}
					}
				}
				s := soakSample{at: at, name: name, pid: pid,
					rss:        80<<20 + rng.Float64()*(2<<20),
					heap:       20<<20 + float64(at%(37*time.Second))/float64(37*time.Second)*(20<<20),
					goroutines: 50 + float64(rng.IntN(3)),
					fds:        20,
				}
				count[i][0] += 20
				if overlaps([]soakWindow{fault}, at, at) {
					s.rss, s.goroutines = 150<<20, 400
					count[i][1] += 10
				} else {
					count[i][1] += abortsOutside
				}
				s.committed, s.aborted, s.records = count[i][0], count[i][1], count[i][0]*50
				s.hwm = max(s.rss, 150<<20)
				h := at.Hours()
				switch leak {
				case "rss":
					s.rss += rate * h
				case "goroutine":
					s.goroutines += rate * h
				case "heap":
					s.heap += rate * h
				case "fds":
					s.fds += rate * h
				}
				ss = append(ss, s)
			}
		}
		return ss
	}
	verdict := func(ss []soakSample) ([]string, []soakSlope) {
		slopes := steadySlopes(ss, windows, 3*time.Minute, 10*time.Minute)
		aborted, ended := abortsOutside(soakDeltas(ss), windows)
		peak := 0.0
		for _, s := range ss {
			peak = max(peak, s.hwm)
		}
		return soakVerdict(slopes, aborted, ended, peak, lim), slopes
	}

	why, slopes := verdict(flat("", 0, 0))
	if len(why) > 0 {
		t.Errorf("flat soak fails: %v", why)
	}
	// a's and b's second process; b's first ended in the fault.
	if len(slopes) != 2 || slopes[0].pid != 100 || slopes[1].pid != 200 {
		t.Fatalf("slopes fitted for %+v, want pids 100 and 200", slopes)
	}
	if g := slopes[0].before[1]; g < 50 || g > 52 {
		t.Errorf("a's goroutines before the fault: median %v, want 50 to 52", g)
	}
	if !math.IsNaN(slopes[1].before[1]) {
		t.Errorf("b's second process has a level before the fault: %v", slopes[1].before[1])
	}
	for _, d := range soakDeltas(flat("", 0, 0)) {
		if d.committed < 0 || d.aborted < 0 {
			t.Fatalf("negative delta %+v", d)
		}
	}
	for _, m := range soakMetrics {
		why, _ := verdict(flat(m.name, 2*m.maxRate, 0))
		if len(why) == 0 || !strings.Contains(strings.Join(why, "\n"), " "+m.name+" grows") {
			t.Errorf("a leak of %s/h of %s passes: %v", m.format(2*m.maxRate), m.name, why)
		}
	}
	// 2 aborted for every 20 committed outside the windows: 9 %.
	if why, _ := verdict(flat("", 0, 2)); !slices.ContainsFunc(why, func(s string) bool { return strings.Contains(s, "aborted outside") }) {
		t.Errorf("9%% aborts outside the windows pass: %v", why)
	}
}
