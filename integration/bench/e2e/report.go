package main

import (
	"debug/buildinfo"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// median returns the median of fn over the rounds of contender key, or 0
// if it has none.
func (b *bench) median(key string, fn func(result) float64) float64 {
	var v []float64
	for _, r := range b.results {
		if r.contender == key && r.round > 0 {
			v = append(v, fn(r))
		}
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// group formats n with thousands separators.
func group(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + group(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func mb(n int64) float64 { return float64(n) / 1e6 }

// report prints the machine, the tables and the targets.
func (b *bench) report(w io.Writer) {
	m := b.machine
	o := b.o
	fmt.Fprintf(w, "quarantine-watch end-to-end benchmark (make bench-e2e), %s, took %s\n\n",
		b.began.UTC().Format(time.RFC3339), time.Since(b.began).Round(time.Second))
	fmt.Fprintf(w, "machine   %d CPUs (nproc), %s, %.1f GiB RAM, Linux %s\n", m.nproc, m.model, float64(m.memTotal)/(1<<30), m.kernel)
	fmt.Fprintf(w, "load      load average (1, 5, 15 min) %s at the start, %s at the end\n", m.loadStart, m.loadEnd)
	fmt.Fprintf(w, "software  quarantine-watch built with %s (benchmark and Go contenders %s); %s (Kafka Streams 4.1.1);\n",
		m.qwGoVersion, m.goVersion, m.java)
	fmt.Fprintf(w, "          %s, KAFKA_HEAP_OPTS=%q, one node, host networking on 127.0.0.1\n", m.kafka, o.kafkaHeap)
	t := b.truth
	if t.records > 0 {
		fmt.Fprintf(w, "data      %s single CloudTrail records (cloudtrailgen seed %d, Shapes {ShapeRecord: 1}), %s MB of values (%d B average),\n",
			group(t.records), o.seed, group(int64(mb(t.bytes))), t.bytes/t.records)
		fmt.Fprintf(w, "          %d partitions, written with lz4, linger 10 ms, batches up to 1 MiB: %s MB on the broker;\n",
			o.partitions, group(int64(mb(b.diskBytes))))
		fmt.Fprintf(w, "          %d findings expected (generator ground truth: quarantine rate %g, near misses %g)\n",
			len(t.positives), o.quarantineRate, min(10*o.quarantineRate, 1-o.quarantineRate))
	}
	fmt.Fprintf(w, "settings  %squarantine-watch run --max-batch %d --metrics-addr \"\" --log-format json%s, other flags default (--workers 0: one per CPU);\n", suffixSpace(o.qwEnv), o.maxBatch, prefixSpace(o.qwArgs))
	if strings.Contains(o.contenders, "quarantine-watch-b") {
		if o.qwBBin != "" {
			fmt.Fprintf(w, "          quarantine-watch-b: the binary %s", o.qwBBin)
			if rev := buildRevision(o.qwBBin); rev != "" {
				fmt.Fprintf(w, " (revision %s)", rev)
			}
			fmt.Fprintf(w, ", the same flags plus %q;\n", strings.TrimSpace(o.qwBArgs+" "+o.qwBEnv))
		} else {
			fmt.Fprintf(w, "          quarantine-watch-b: the same plus %s;\n", strings.TrimSpace(o.qwBArgs+" "+o.qwBEnv))
		}
	}
	fmt.Fprintf(w, "          naive: %d records per transaction, one goroutine; Kafka Streams: %d stream threads, JVM options %q\n",
		o.maxBatch, o.streamsThreads, o.javaOpts)

	if len(b.results) > 0 {
		fmt.Fprintf(w, "\nThroughput: each contender reads the whole topic from its start (read_committed), median of %d rounds.\n", o.rounds)
		fmt.Fprintf(w, "records/s and MB/s (of record values) run from the first committed offset to the last; startup is process start to\n")
		fmt.Fprintf(w, "the first committed offset; CPU and peak RSS are the process's (utime+stime, VmHWM) when it reached the end.\n\n")
		var tw table
		tw.addf("contender\trecords/s\tMB/s\t× ceiling\tCPU s/M records\tpeak RSS MB\tstartup s\tfindings")
		ceiling := b.median("ceiling", func(r result) float64 { return r.rate })
		for _, c := range allContenders {
			if !slices.ContainsFunc(b.results, func(r result) bool { return r.contender == c.key }) {
				continue
			}
			med := func(fn func(result) float64) float64 { return b.median(c.key, fn) }
			rate := med(func(r result) float64 { return r.rate })
			ratio := "-"
			if ceiling > 0 {
				ratio = fmt.Sprintf("%.2f", rate/ceiling)
			}
			tw.addf("%s\t%s\t%.1f\t%s\t%.2f\t%.0f\t%.1f\t%s", c.label, group(int64(rate)),
				med(func(r result) float64 { return r.mbps }), ratio,
				med(func(r result) float64 { return r.cpuPerMillion() }),
				med(func(r result) float64 { return float64(r.rss) / (1 << 20) }),
				med(func(r result) float64 { return r.startup.Seconds() }),
				b.findingsCell(c.key))
		}
		tw.print(w)

		fmt.Fprintf(w, "\nEvery round:\n\n")
		tw = table{}
		tw.addf("contender\tround\trecords/s\tMB/s\tCPU s\tpeak RSS MB\tstartup s\twall s\tfindings")
		for _, r := range b.results {
			f := "-"
			if r.findings >= 0 {
				f = fmt.Sprint(r.findings)
				if r.err != nil {
					f += " WRONG"
				}
			}
			tw.addf("%s\t%d\t%s\t%.1f\t%.1f\t%.0f\t%.1f\t%.1f\t%s", r.contender, r.round, group(int64(r.rate)), r.mbps,
				r.cpu.Seconds(), float64(r.rss)/(1<<20), r.startup.Seconds(), r.wall.Seconds(), f)
		}
		tw.print(w)
	}

	if len(b.latency) > 0 {
		l0 := b.latency[0]
		fmt.Fprintf(w, "\nDetection latency at %s records/s (half of quarantine-watch's median throughput unless -latency-rate)", group(int64(l0.target)))
		if o.latencyQWRate > 0 {
			fmt.Fprintf(w, ", and of quarantine-watch\nalone at %s records/s (-latency-qw-rate)", group(int64(o.latencyQWRate)))
		}
		fmt.Fprintf(w, "; %g of records are findings, %s measured after a %s warm-up, on an\n", o.latencyPosRate, o.latencyFor, o.latencyWarmup)
		fmt.Fprintf(w, "empty topic of %d partitions. Latency is from the source record's timestamp (set by the producer) to the finding's\n", o.partitions)
		fmt.Fprintf(w, "receipt by a read_committed consumer; \"in producer\" is the part of it before the broker acknowledged the source\n")
		fmt.Fprintf(w, "record, which no contender can shorten, and \"after ack\" the rest (the contender's part, with the broker's serving\n")
		fmt.Fprintf(w, "of it), each finding's own. The ceiling's row has only the producer's part: the same load while a plain franz-go\n")
		fmt.Fprintf(w, "consumer reads it.\n\n")
		var tw table
		tw.addf("contender\tasked records/s\tproduced records/s\tsamples\tnot received\tp50 ms\tp99 ms\tmax ms\tin producer p99 ms\tafter ack p99 ms\tCPU cores\tpeak RSS MB")
		for _, l := range b.latency {
			samples, censored := fmt.Sprint(len(l.samples)+l.censored), fmt.Sprint(l.censored)
			if l.reference {
				samples, censored = "-", "-"
			}
			tw.addf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%.2f\t%.0f", l.label, group(int64(l.target)), group(int64(l.achieved)), samples, censored,
				l.msCell(0.5), l.msCell(0.99), l.msCell(1), msf(l.queuedP99()), l.ownCell(0.99), l.cpu.Seconds()/l.busy.Seconds(), float64(l.rss)/(1<<20))
		}
		tw.print(w)
		for _, l := range b.latency {
			if l.note != "" {
				fmt.Fprintf(w, "%s at %s records/s: note: %s\n", l.contender, group(int64(l.target)), l.note)
			}
			if l.err != nil {
				fmt.Fprintf(w, "%s at %s records/s: FAILED: %v\n", l.contender, group(int64(l.target)), l.err)
			}
		}
	}

	b.targets(w)

	if b.profile != "" {
		fmt.Fprintf(w, "\nCPU profile of quarantine-watch (%d s while reading the topic, %s):\n\n%s\n", o.pprofSeconds, o.pprofOut, b.profile)
	}
	for _, err := range b.failures {
		fmt.Fprintf(w, "\nFAILED: %v\n", err)
	}
	fmt.Fprintf(w, "\ncontender logs: %s\n", b.logDir)
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ms(d time.Duration) string { return fmt.Sprintf("%.0f", msf(d)) }

// findingsCell says whether every round found exactly what it should.
func (b *bench) findingsCell(key string) string {
	cell := "-"
	for _, r := range b.results {
		if r.contender != key || r.findings < 0 {
			continue
		}
		if r.err != nil {
			return fmt.Sprintf("%d/%d WRONG", r.findings, len(b.truth.positives))
		}
		cell = fmt.Sprintf("%d/%d ok", r.findings, len(b.truth.positives))
	}
	return cell
}

// targets prints each of quarantine-watch's targets as measured.
func (b *bench) targets(w io.Writer) {
	rate := func(key string) float64 { return b.median(key, func(r result) float64 { return r.rate }) }
	qw := rate("quarantine-watch")
	if qw == 0 {
		return
	}
	fmt.Fprintf(w, "\nTargets (quarantine-watch):\n\n")
	tw := table{left: 2}
	tw.addf("target\tmeasured\t")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	ratio := func(name, key string, want float64) {
		other := rate(key)
		if other == 0 {
			tw.addf("≥ %g× %s\tnot measured\t", want, name)
			return
		}
		tw.addf("≥ %g× %s\t%.2f× (%s vs %s records/s)\t%s", want, name, qw/other, group(int64(qw)), group(int64(other)), verdict(qw/other >= want))
	}
	ratio("the ceiling", "ceiling", 0.9)
	ratio("Kafka Streams EOS", "kafka-streams", 3.5)
	ratio("the naive baseline", "naive", 2)
	for _, l := range b.latency {
		if l.contender != "quarantine-watch" {
			continue
		}
		at := group(int64(l.achieved))
		if l.achieved < 0.95*float64(l.target) {
			at += " of the " + group(int64(l.target)) + " asked"
		}
		if l.fixed {
			p99 := l.ownPercentile(0.99)
			tw.addf("p99 after the broker's ack ≤ 100 ms at %s records/s\t%s ms (whole latency p99 %s ms, %s in the producer) at %s records/s\t%s",
				group(int64(l.target)), l.ownCell(0.99), l.msCell(0.99), ms(l.queuedP99()), at,
				verdict(l.err == nil && len(l.own) > 0 && p99 >= 0 && p99 <= 100*time.Millisecond))
		} else {
			p99 := l.percentile(0.99)
			tw.addf("p99 detection latency ≤ 300 ms at half load\t%s ms (%s in the producer, %s after the ack) at %s records/s\t%s", l.msCell(0.99),
				ms(l.queuedP99()), l.ownCell(0.99), at, verdict(l.err == nil && len(l.samples) > 0 && p99 >= 0 && p99 <= 300*time.Millisecond))
		}
	}
	var peak int64
	for _, r := range b.results {
		if r.contender == "quarantine-watch" {
			peak = max(peak, r.rss)
		}
	}
	for _, l := range b.latency {
		if l.contender == "quarantine-watch" {
			peak = max(peak, l.rss)
		}
	}
	tw.addf("peak RSS ≤ 256 MB\t%.0f MB (VmHWM, highest of every run)\t%s", float64(peak)/(1<<20), verdict(peak <= 256<<20))
	cpu := func(key string) float64 { return b.median(key, func(r result) float64 { return r.cpuPerMillion() }) }
	if c := cpu("ceiling"); c > 0 {
		tw.addf("CPU s per million records, against the ceiling's\t%.2f vs %.2f (%.2f×)\t", cpu("quarantine-watch"), c, cpu("quarantine-watch")/c)
	}
	tw.print(w)
}

// profileTop returns the top of a CPU profile, or why there is none.
func profileTop(profile, binary string) string {
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=30", binary, profile).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(go tool pprof: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out))
}

func prefixSpace(s string) string {
	if s == "" {
		return ""
	}
	return " " + s
}

func suffixSpace(s string) string {
	if s == "" {
		return ""
	}
	return s + " "
}

// buildRevision is the VCS revision a Go binary was built from, "" if it
// does not say.
func buildRevision(path string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return ""
	}
	rev, modified := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev != "" && modified {
		rev += " (modified)"
	}
	return rev
}
