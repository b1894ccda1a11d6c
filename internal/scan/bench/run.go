package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// contender is one command the benchmark times.
type contender struct {
	key, label string
	argv       func(b *bench) []string
	// bound is the key of the contender whose rate, in the same pass, this
	// one's is divided by; target is the ratio it must reach (0: none).
	bound  string
	target float64
	// best runs it that many times per pass and keeps the fastest: the
	// bounds, which the scans are compared to at their best.
	best bool
	// scan runs are checked against the ground truth.
	scan bool
	// gzip runs read the gzip copy.
	gzip bool
	// compare runs need -compare.
	compare bool
}

func (b *bench) contenders() []contender {
	self, _ := os.Executable()
	scan := func(bin string, gz bool, flags ...string) func(b *bench) []string {
		return func(b *bench) []string {
			f := b.data.Path
			if gz {
				f = b.data.GzipPath
			}
			return append(append([]string{bin, "scan"}, flags...), f)
		}
	}
	all := []contender{
		{key: "wc", label: "wc -l", best: true, argv: func(b *bench) []string { return []string{"wc", "-l", b.data.Path} }},
		{key: "novalidate", label: "scan --validate=false", bound: "wc", target: 0.25, scan: true, argv: scan(b.o.bin, false, "--validate=false")},
		{key: "validate", label: "scan (defaults: validating)", bound: "wc", target: 0.1, scan: true, argv: scan(b.o.bin, false)},
		{key: "gunzip", label: "gzip -dc", best: true, gzip: true, argv: func(b *bench) []string { return []string{"gzip", "-dc", b.data.GzipPath} }},
		{key: "inflate", label: "klauspost inflate", bound: "gunzip", gzip: true, argv: func(b *bench) []string { return []string{self, "inflate", b.data.GzipPath} }},
		{key: "gz", label: "scan .gz (defaults)", bound: "gunzip", target: 0.8, scan: true, gzip: true, argv: scan(b.o.bin, true)},
		{key: "gznovalidate", label: "scan .gz --validate=false", bound: "gunzip", scan: true, gzip: true, argv: scan(b.o.bin, true, "--validate=false")},
		{key: "old-novalidate", label: "compare: scan --validate=false", bound: "wc", scan: true, compare: true, argv: scan(b.o.compare, false, "--validate=false")},
		{key: "old-validate", label: "compare: scan", bound: "wc", scan: true, compare: true, argv: scan(b.o.compare, false)},
		{key: "old-gz", label: "compare: scan .gz", bound: "gunzip", scan: true, gzip: true, compare: true, argv: scan(b.o.compare, true)},
	}
	return slices.DeleteFunc(all, func(c contender) bool { return c.compare && b.o.compare == "" })
}

type bench struct {
	o        options
	out, log io.Writer
	began    time.Time
	data     dataset
	machine  machine
	results  []result
	failures []string
}

// result is one timed run (the best of a bound's runs in a pass).
type result struct {
	contender string
	round     int
	wall      time.Duration
	cpu       time.Duration // user + system
	maxRSS    int64         // bytes
	load1     string
	counts    counts
}

// counts is what a scan said it saw (its summary line) and found (stdout).
type counts struct {
	documents, findings, malformed int64
	ids                            []string
}

func (b *bench) progress(msg string) { fmt.Fprintf(b.log, "bench: %s\n", msg) }

func (b *bench) run() error {
	var err error
	if b.data, err = ensureDataset(b.o.dir, b.o.seed, b.o.records, b.progress); err != nil {
		return err
	}
	b.machine = describeMachine(b.o.bin)
	cs := b.contenders()
	// A first pass of each reads the files into the page cache and is not
	// counted.
	b.progress("warming the page cache")
	for _, f := range []string{b.data.Path, b.data.GzipPath} {
		if err := warm(f); err != nil {
			return err
		}
	}
	for round := 1; round <= b.o.rounds; round++ {
		load := loadAverage()
		b.progress(fmt.Sprintf("pass %d of %d (load average %s)", round, b.o.rounds, load))
		for _, c := range cs {
			runs := 1
			if c.best {
				runs = b.o.bestOf
			}
			var best result
			for i := range runs {
				r, err := b.runOnce(c)
				if err != nil {
					return fmt.Errorf("%s: %w", c.label, err)
				}
				if i == 0 || r.wall < best.wall {
					best = r
				}
			}
			best.round, best.load1 = round, strings.Fields(load + " ?")[0]
			b.results = append(b.results, best)
			if c.scan {
				b.check(c, best)
			}
		}
	}
	b.machine.loadEnd = loadAverage()
	b.report(b.out)
	if len(b.failures) > 0 {
		return fmt.Errorf("%d checks failed", len(b.failures))
	}
	return nil
}

func warm(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// runOnce runs c as a process of its own, stdout and stderr to temporary
// files, and reads its CPU time and peak RSS from its rusage.
func (b *bench) runOnce(c contender) (result, error) {
	argv := c.argv(b)
	// Output that is checked goes to a file; gzip -dc's, 300 MB, to
	// /dev/null, as a bare decompression would.
	stdout, err := os.CreateTemp("", "bench-scan-stdout")
	if err != nil {
		return result{}, err
	}
	defer os.Remove(stdout.Name())
	defer stdout.Close()
	out := io.Writer(stdout)
	if c.key == "gunzip" {
		null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return result{}, err
		}
		defer null.Close()
		out = null
	}
	var stderr bytes.Buffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("%q: %w\n%s", argv, err, tail(stderr.Bytes(), 2000))
	}
	r := result{contender: c.key, wall: time.Since(start)}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		r.maxRSS = ru.Maxrss << 10 // KiB on Linux
	}
	if c.scan {
		out, err := os.ReadFile(stdout.Name())
		if err != nil {
			return r, err
		}
		if r.counts, err = parseScan(out, stderr.Bytes()); err != nil {
			return r, fmt.Errorf("%q: %w", argv, err)
		}
	}
	if c.key == "wc" {
		out, _ := os.ReadFile(stdout.Name())
		var n int64
		fmt.Sscan(string(out), &n)
		if n != b.data.Truth.Documents {
			return r, fmt.Errorf("wc -l counted %d lines, the file has %d documents", n, b.data.Truth.Documents)
		}
	}
	return r, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// parseScan reads the event ids of the findings on stdout and the counts of
// the summary, the last line of stderr.
func parseScan(stdout, stderr []byte) (counts, error) {
	var c counts
	for line := range bytes.Lines(stdout) {
		var doc struct {
			Event struct{ ID string } `json:"event"`
		}
		if err := json.Unmarshal(line, &doc); err != nil || doc.Event.ID == "" {
			return c, fmt.Errorf("stdout line is not an ECS alert: %.200q", line)
		}
		c.ids = append(c.ids, doc.Event.ID)
	}
	lines := bytes.Split(bytes.TrimSpace(stderr), []byte("\n"))
	last := string(lines[len(lines)-1])
	var files, unreadable int
	if _, err := fmt.Sscanf(last, "scan: %d files (%d unreadable), %d documents, %d findings, %d malformed",
		&files, &unreadable, &c.documents, &c.findings, &c.malformed); err != nil {
		return c, fmt.Errorf("no summary line at the end of stderr (%v): %q", err, last)
	}
	if int64(len(c.ids)) != c.findings {
		return c, fmt.Errorf("summary says %d findings, stdout has %d", c.findings, len(c.ids))
	}
	return c, nil
}

// check compares a scan's counts and findings with the ground truth.
func (b *bench) check(c contender, r result) {
	t := b.data.Truth
	var errs []error
	if r.counts.documents != t.Documents {
		errs = append(errs, fmt.Errorf("%d documents, the file has %d", r.counts.documents, t.Documents))
	}
	if r.counts.malformed != t.Malformed {
		errs = append(errs, fmt.Errorf("%d malformed, the file has %d", r.counts.malformed, t.Malformed))
	}
	got, want := slices.Sorted(slices.Values(r.counts.ids)), slices.Sorted(slices.Values(t.Positives))
	if !slices.Equal(got, want) {
		errs = append(errs, fmt.Errorf("findings differ from the %d positives: %s", len(want), diff(got, want)))
	}
	if err := errors.Join(errs...); err != nil {
		b.failures = append(b.failures, fmt.Sprintf("%s, pass %d: %v", c.label, r.round, err))
	}
}

// diff describes the ids in only one of two sorted lists.
func diff(got, want []string) string {
	var extra, missing []string
	for i, j := 0, 0; i < len(got) || j < len(want); {
		switch {
		case j == len(want) || i < len(got) && got[i] < want[j]:
			extra = append(extra, got[i])
			i++
		case i == len(got) || got[i] > want[j]:
			missing = append(missing, want[j])
			j++
		default:
			i++
			j++
		}
	}
	return fmt.Sprintf("%d missing %q, %d extra %q", len(missing), missing[:min(5, len(missing))], len(extra), extra[:min(5, len(extra))])
}
